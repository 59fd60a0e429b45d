//! Buffer allocation: every buffer of a plan gets an offset in one arena sized for the largest
//! batch. A buffer's space is reused once its last reader has run (liveness, first fit), and
//! every buffer starts on a cache line.

use super::kernels::Kernel;
use super::layout::{Base, Sym, View};
use crate::ir::NodeId;

/// A buffer of the arena, by index into `Plan::buffers` (its offset) and the planner's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(u32);

/// A new buffer of `floats` (a size in terms of the batch), recorded in `sizes`.
pub fn new_buffer(sizes: &mut Vec<Sym>, floats: Sym) -> BufferId {
    sizes.push(floats);
    BufferId(u32::try_from(sizes.len() - 1).expect("fewer than 2^32 buffers"))
}

impl BufferId {
    /// Its index into the plan's tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The alignment of every buffer in the arena, in floats: a 64-byte cache line.
pub const ALIGN: usize = 16;

/// Places buffers in one arena: a buffer's space is reused after its last reader, first fit;
/// wanted results live to the end. `None` when the arena would not fit in the address space.
pub fn allocate(
    kernels: &[Kernel],
    sizes: &[Sym],
    views: &[Option<View>],
    wanted: &[NodeId],
    max_batch: usize,
) -> Option<(Vec<usize>, usize)> {
    let mut last_read = vec![0usize; sizes.len()];
    for (k, kernel) in kernels.iter().enumerate() {
        for view in kernel.reads() {
            if let Base::Buffer(b) = view.base {
                last_read[b.index()] = k;
            }
        }
    }
    for id in wanted {
        if let Some(View {
            base: Base::Buffer(b),
            ..
        }) = &views[id.index()]
        {
            last_read[b.index()] = usize::MAX;
        }
    }
    // Every buffer starts on a cache line, as the arena does: vector loads never straddle two.
    let floats = |s: Sym| (s.at(max_batch as i64).max(1) as usize).next_multiple_of(ALIGN);
    let mut buffers = vec![0usize; sizes.len()];
    let mut free: Vec<(usize, usize)> = Vec::new(); // (offset, length)
    let mut end = 0;
    let mut live: Vec<BufferId> = Vec::new();
    for (k, kernel) in kernels.iter().enumerate() {
        let out = &kernel.out();
        for buffer in kernel.writes().into_iter().chain(kernel.kind().scratch()) {
            let need = floats(sizes[buffer.index()]);
            let slot = free.iter().position(|&(_, len)| len >= need);
            buffers[buffer.index()] = match slot {
                Some(i) => {
                    let (offset, len) = free.remove(i);
                    if len > need {
                        free.push((offset + need, len - need));
                    }
                    offset
                }
                None => {
                    end =
                        usize::checked_add(end, need).filter(|&e| e <= isize::MAX as usize / 4)?;
                    end - need
                }
            };
            live.push(buffer);
        }
        if let Some(scratch) = kernel.kind().scratch() {
            last_read[scratch.index()] = k;
        }
        // Buffers whose last reader is this kernel are free for the kernels after it.
        live.retain(|&b| {
            let done = last_read[b.index()] <= k && b != *out;
            if done {
                free.push((buffers[b.index()], floats(sizes[b.index()])));
            }
            !done
        });
    }
    Some((buffers, end))
}
