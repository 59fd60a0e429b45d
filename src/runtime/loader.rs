//! Batches gathered on a second thread, one step ahead of training: copying the shuffled rows
//! out of the data set (a pass over memory as large as the data set each epoch) overlaps the
//! step that trains on the previous batch instead of adding to it. Batches arrive in order, so
//! results do not depend on the thread.

use super::batch_tensors;
use crate::data::Dataset;
use crate::interp::Tensor;
use crate::ir::Decl;
use std::sync::mpsc;

/// Calls `step(index, rows, batch)` for each batch of `order`, in order, while the next batch
/// is gathered. Stops at the first error `step` returns.
pub fn for_each_batch<E>(
    inputs: &[Decl],
    data: &Dataset,
    order: &[usize],
    batch: usize,
    mut step: impl FnMut(usize, &[usize], &[Tensor<f32>]) -> Result<(), E>,
) -> Result<(), E> {
    std::thread::scope(|scope| {
        // Filled batches go one way; their memory comes back the other way to be refilled.
        let (fill, filled) = mpsc::sync_channel::<Vec<Tensor<f32>>>(1);
        let (recycle, empty) = mpsc::channel::<Vec<Tensor<f32>>>();
        scope.spawn(move || {
            for rows in order.chunks(batch) {
                let mut tensors = empty.try_recv().unwrap_or_default();
                batch_tensors(inputs, data, rows, &mut tensors);
                if fill.send(tensors).is_err() {
                    return; // training stopped early
                }
            }
        });
        for (index, rows) in order.chunks(batch).enumerate() {
            let tensors = filled.recv().expect("the loader sends every batch");
            step(index, rows, &tensors)?;
            // The loader may have finished and gone; then the memory is simply dropped.
            let _ = recycle.send(tensors);
        }
        Ok(())
    })
}
