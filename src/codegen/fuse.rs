//! Fusion policy: which elementwise nodes are inlined into one map (`fusible`), and which maps
//! and sums run inside the kernel that produces their operands, on its pieces while they are
//! in cache (`with_epilogues`). What a kind of kernel can take is its own fact
//! (`KernelKind::epilogue_for`, `summing`, `finished`); this file decides when to ask.

use super::alloc::{new_buffer, BufferId};
use super::kernels::{Kernel, KernelKind, Map, Sums};
use super::layout::{contiguous, row_major, Base, Sym};
use crate::ir::{Elementwise, Graph, NodeId, Op, ReduceOp};

/// The deepest chain of operations one map fuses: a longer chain (thousands of equations
/// `h = h + b`) becomes several maps, so that fusing, emitting and compiling stay linear in
/// the graph and recursion over an expression stays shallow.
pub const MAX_FUSED_DEPTH: usize = 32;

/// Elementwise nodes to inline into their consumer: used exactly once, by an elementwise
/// node (of the same shape, as elementwise operands always are) or, for an operation of one
/// or two operands, by a reduction, and not a result. A one-hot encoding is inlined into every
/// elementwise consumer however many there are: comparing a label costs less than reading a
/// stored value.
pub fn fusible(graph: &Graph, wanted: &[NodeId]) -> Vec<bool> {
    let arithmetic = |op: &Op| {
        matches!(
            op.elementwise(),
            Some(Elementwise::Unary(_) | Elementwise::Binary(_))
        )
    };
    let consumes = |consumer: &Op, producer: &Op| {
        arithmetic(consumer) || (matches!(consumer, Op::Reduce(..)) && arithmetic(producer))
    };
    let mut uses = vec![0usize; graph.nodes.len()];
    let mut consumer_inlines = vec![true; graph.nodes.len()];
    for node in &graph.nodes {
        for a in &node.args {
            uses[a.index()] += 1;
            consumer_inlines[a.index()] &= consumes(&node.op, &graph.node(*a).op);
        }
    }
    let mut result = vec![false; graph.nodes.len()];
    for id in wanted {
        result[id.index()] = true;
    }
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let inlined = match n.op.elementwise() {
                Some(Elementwise::OneHot) => uses[i] >= 1,
                Some(Elementwise::Unary(_) | Elementwise::Binary(_)) => uses[i] == 1,
                // A mask is drawn where it is stored: one kernel of its own.
                Some(Elementwise::DropoutMask { .. }) | None => false,
            };
            inlined && consumer_inlines[i] && !result[i]
        })
        .collect()
}

/// Moves each map into the kernel that produces its operands, at the end of that kernel's
/// epilogue, when it reads what the kernel writes and can run on the same pieces (see
/// `KernelKind::epilogue_for`: a matrix product's rows, a forward convolution's chunks of
/// images, a pooling gradient's planes). A map may move up past kernels it does not depend
/// on: it then runs while the product's output is still in cache, however late the graph
/// needs it. A sum that the producer of its input can compute from its pieces joins it too
/// (see `Sums`), and maps over a kernel's finished result run right after it.
///
/// Scalars computed from hyperparameters alone (Adam's bias corrections) come first, so that
/// nothing they feed waits for them.
pub fn with_epilogues(
    graph: &Graph,
    kernels: Vec<Kernel>,
    sizes: &mut Vec<Sym>,
    max_batch: usize,
) -> Vec<Kernel> {
    let (mut result, rest): (Vec<Kernel>, Vec<Kernel>) = kernels.into_iter().partition(|k| {
        matches!(k, Kernel::Map(Map { args, .. })
            if graph.shape(k.node()).0.is_empty()
                && args.iter().all(|a| !matches!(a.base, Base::Buffer(_) | Base::External(_))))
    });
    for kernel in rest {
        let kernel = match kernel {
            Kernel::Reduce(reduce) => {
                let input = summed(&reduce);
                let producer = input.and_then(|input| {
                    let producer = result
                        .iter_mut()
                        .rev()
                        .find(|k| k.writes().contains(&input))?;
                    // Each piece after the first has its own sums, when every piece has a part.
                    let pieces = producer.kind().pieces(graph, max_batch);
                    let kind = producer.kind_mut();
                    let (sums, len, partial) =
                        kind.summing(graph, &reduce.axes, &reduce.input_dims)?;
                    let parts = match (partial, pieces) {
                        (false, _) | (true, None) => None,
                        // Parts of batch-dependent length would need room at every batch.
                        (true, Some(_)) if len.batch => return None,
                        (true, Some(pieces)) => Some(len.scaled(pieces.most - 1)),
                    };
                    Some((sums, len, parts, input))
                });
                if let Some((sums, len, parts, input)) = producer {
                    *sums = Some(Sums {
                        node: reduce.node,
                        out: reduce.out,
                        input,
                        len,
                        partial: parts.map(|floats| new_buffer(sizes, floats)),
                        then: Vec::new(),
                    });
                    continue;
                }
                // Left a kernel of its own: cut into pieces when it is worth it, with room
                // for the parts of pieces after the first.
                let mut reduce = reduce;
                reduce.partial = reduce
                    .cut(max_batch)
                    .map(|pieces| new_buffer(sizes, reduce.out_floats().scaled(pieces.most - 1)));
                Kernel::Reduce(reduce)
            }
            Kernel::Map(map) => match joined(graph, &mut result, map) {
                Some(map) => Kernel::Map(map),
                None => continue,
            },
            Kernel::Gemm(_)
            | Kernel::Copy(_)
            | Kernel::Conv(_)
            | Kernel::Pool(_)
            | Kernel::PoolGrad(_)
            | Kernel::Softmax(_) => kernel,
        };
        result.push(kernel);
    }
    result
}

/// The buffer a reduction sums, when a kernel could compute the sum from its pieces: a
/// contiguous sum of a buffer.
fn summed(reduce: &super::kernels::Reduce) -> Option<BufferId> {
    let view = reduce.plain()?;
    let Base::Buffer(input) = view.base else {
        return None;
    };
    let contiguous = view.strides == row_major(&reduce.input_dims);
    (reduce.op == ReduceOp::Sum && contiguous).then_some(input)
}

/// Adds `map` to the epilogue of the last kernel writing anything it reads (every operand is
/// ready after it), or to the maps after that kernel's finished result; gives it back when
/// neither can take it. A map that reads no buffer (a dropout mask) may join the kernel
/// before it.
fn joined(graph: &Graph, result: &mut [Kernel], map: Map) -> Option<Map> {
    let reads: Vec<Base> = map.args.iter().map(|a| a.base).collect();
    let independent = !reads.iter().any(|b| matches!(b, Base::Buffer(_)));
    let Some(producer) = result
        .iter_mut()
        .rev()
        .find(|k| independent || k.writes().iter().any(|&w| reads.contains(&Base::Buffer(w))))
    else {
        return Some(map);
    };
    if reads_pieces(graph, producer, &map) {
        if let Some(epilogue) = producer.kind_mut().epilogue_for(graph, &map) {
            epilogue.push(map);
            return None;
        }
    }
    if let Some(then) = finished(graph, producer, &map) {
        then.push(map);
        return None;
    }
    Some(map)
}

/// Where `map` can run once `producer`'s work is complete, when what it reads of that work is
/// the final result or the maps already after it, element for element.
fn finished<'k>(graph: &Graph, producer: &'k mut Kernel, map: &Map) -> Option<&'k mut Vec<Map>> {
    let written = producer.writes();
    let (node, out, then) = producer.kind_mut().finished()?;
    let shape = graph.shape(node);
    let mut complete: Vec<BufferId> = then.iter().map(|map| map.out).collect();
    complete.push(out);
    let pointwise = map.args.iter().all(|a| match a.base {
        Base::Buffer(b) if written.contains(&b) => {
            complete.contains(&b) && a.strides == contiguous(shape)
        }
        _ => true,
    });
    (graph.shape(map.node) == shape && pointwise).then_some(then)
}

/// Whether `map` may run at the end of `producer`'s epilogue as far as its reads go: it reads
/// something the producer writes (or nothing from a buffer), not the producer's sums (they
/// come after the whole epilogue), and what it reads of the epilogue's outputs, it reads
/// element for element. Whether the producer's pieces suit the map is the producer's to say.
fn reads_pieces(graph: &Graph, producer: &Kernel, map: &Map) -> bool {
    let shape = contiguous(graph.shape(map.node));
    let outputs: Vec<Base> = (producer.kind().outputs().into_iter())
        .map(Base::Buffer)
        .collect();
    let chained: Vec<Base> = (producer.kind().epilogue().iter())
        .map(|e| Base::Buffer(e.out))
        .collect();
    let sums: Vec<Base> = (producer.writes().into_iter())
        .map(Base::Buffer)
        .filter(|w| !outputs.contains(w) && !chained.contains(w))
        .collect();
    let reads = |set: &[Base]| map.args.iter().any(|a| set.contains(&a.base));
    let pointwise = (map.args.iter()).all(|a| !chained.contains(&a.base) || a.strides == shape);
    let independent = !map.args.iter().any(|a| matches!(a.base, Base::Buffer(_)));
    pointwise && !reads(&sums) && (independent || reads(&outputs) || reads(&chained))
}

/// How many iterations of `map`'s outermost loop cover one row of `producer` (see
/// `KernelKind::rows`), when the map reads the producer's results only element for element,
/// so that a piece of rows of the results is all a piece of the map needs: 1 when the map
/// loops over rows, the row's length when it is one flat loop.
pub fn iterations_per_row(graph: &Graph, producer: &dyn KernelKind, map: &Map) -> Option<i64> {
    let (rows, len) = producer.rows()?;
    let shape = graph.shape(producer.node());
    let outputs = producer.outputs();
    let pointwise = graph.shape(map.node) == shape
        && map.args.iter().all(|a| {
            !matches!(a.base, Base::Buffer(b) if outputs.contains(&b))
                || a.strides == contiguous(shape)
        });
    if !pointwise || len.batch {
        return None;
    }
    let outer = map.map_layout(graph).0;
    if outer.first() == Some(&rows) {
        Some(1)
    } else if outer == [rows.scaled(len.coef)] {
        Some(len.coef)
    } else {
        None
    }
}
