//! ONNX export: a trained model's optimized evaluation graph and weights in, an ONNX model out
//! (the bytes of a `ModelProto`, built from onnx-protobuf's message types). Each primitive
//! operation becomes a standard ONNX operator (a square is `Mul(x, x)`, a broadcast `Expand`),
//! parameters and running statistics become initializers under their `.net` names, and the
//! batch dimension stays symbolic (`N`) unless a fixed batch is asked for. Only what the
//! network's output depends on is exported: the label and the loss are left out, and dropout
//! is already gone from the evaluation graph. An operation an evaluation graph cannot hold in
//! ONNX terms is E0514, naming it and its `.net` line.

use crate::diagnostics::{Code, Diagnostic};
use crate::ir::{BinaryOp, DType, Graph, NodeId, Op, PoolOp, ReduceOp, UnaryOp};
use crate::shape::{Dim, Shape, Window};
use crate::tensor::Tensor;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::{
    type_proto, AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use std::ops::RangeInclusive;

/// The opsets netc writes: `Shape`'s start and end need 15; 18 moved reduction axes to inputs.
pub const OPSETS: RangeInclusive<u32> = 15..=21;
/// The default opset, which every ONNX Runtime since 1.12 runs.
pub const DEFAULT_OPSET: u32 = 17;
/// ONNX's IR version for the opsets above (ONNX 1.10 and later read it).
const IR_VERSION: i64 = 8;

/// The batch dimension of the exported model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// Symbolic, `N`: any batch size.
    Dynamic,
    Fixed(u64),
}

/// What to write besides the graph.
#[derive(Clone, Debug)]
pub struct Options {
    pub opset: u32,
    pub batch: Batch,
    /// The graph output's name: the `.net` file's name for the network's value.
    pub output: String,
    /// The model file, for diagnostics and the model's documentation.
    pub source: String,
}

/// The ONNX model of `graph`'s output with these weights (`states` may be longer than the
/// graph's: training adds the optimizer's).
pub fn export(
    graph: &Graph,
    params: &[Tensor<f32>],
    states: &[Tensor<f32>],
    options: &Options,
) -> Result<Vec<u8>, Diagnostic> {
    let output = graph.result("output").ok_or_else(|| {
        Diagnostic::plain(
            Code::E0514,
            format!("{} has no output to export", options.source),
        )
        .with_note("a model without inputs is an objective over its parameters, not a network")
    })?;
    let mut e = Exporter {
        graph,
        options,
        names: vec![String::new(); graph.nodes.len()],
        nodes: Vec::new(),
        initializers: Vec::new(),
        inputs: Vec::new(),
        batched_input: None,
        batch: None,
        fresh: 0,
    };
    let nodes = reachable(graph, output);
    let implicit = implicit_broadcasts(graph, &nodes, output);
    for id in nodes {
        let name = match implicit[id.index()] {
            // ONNX broadcasts the smaller operand itself, as the graph's broadcast would.
            true => e.names[graph.node(id).args[0].index()].clone(),
            false => e.node(id, params, states)?,
        };
        e.names[id.index()] = name;
    }
    let result = e.names[output.index()].clone();
    e.emit(
        "Identity",
        vec![result],
        vec![],
        Some(options.output.clone()),
    );
    let output_info = e.value_info(&options.output, graph.shape(output), DType::F32);
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "netc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{} exported by netc", options.source),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: i64::from(options.opset),
            ..Default::default()
        }],
        graph: Some(GraphProto {
            name: graph.name.clone(),
            node: e.nodes,
            initializer: e.initializers,
            input: e.inputs,
            output: vec![output_info],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    model.write_to_bytes().map_err(|why| {
        Diagnostic::plain(
            Code::E0514,
            format!("the ONNX model cannot be encoded: {why}"),
        )
    })
}

/// The nodes `output` depends on, in graph (topological) order.
fn reachable(graph: &Graph, output: NodeId) -> Vec<NodeId> {
    let mut needed = vec![false; graph.nodes.len()];
    needed[output.index()] = true;
    for (i, node) in graph.nodes.iter().enumerate().rev() {
        if needed[i] {
            for a in &node.args {
                needed[a.index()] = true;
            }
        }
    }
    (0..graph.nodes.len())
        .filter(|&i| needed[i])
        .map(|i| NodeId(i as u32))
        .collect()
}

/// The broadcasts ONNX's own broadcasting makes: every use is an elementwise operation whose
/// other operand is not a broadcast (so it has the full shape), and the broadcast is not the
/// output. Numpy's rules align shapes from the right in both, so the results are the same.
fn implicit_broadcasts(graph: &Graph, nodes: &[NodeId], output: NodeId) -> Vec<bool> {
    let mut implicit = vec![false; graph.nodes.len()];
    for &id in nodes {
        implicit[id.index()] = matches!(graph.node(id).op, Op::Broadcast(_)) && id != output;
    }
    for &id in nodes {
        let node = graph.node(id);
        let binary = matches!(node.op, Op::Binary(_));
        for (k, a) in node.args.iter().enumerate() {
            let other = node.args.get(1 - k.min(1)).filter(|_| node.args.len() == 2);
            let other_is_broadcast =
                other.is_some_and(|o| matches!(graph.node(*o).op, Op::Broadcast(_)));
            if !binary || other_is_broadcast {
                implicit[a.index()] = false;
            }
        }
    }
    implicit
}

struct Exporter<'a> {
    graph: &'a Graph,
    options: &'a Options,
    /// The ONNX tensor holding each exported node's value.
    names: Vec<String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    /// The first input with a batch dimension, once read.
    batched_input: Option<String>,
    /// The 1-D tensor `[N]` read from it, once something needs it.
    batch: Option<String>,
    fresh: usize,
}

impl Exporter<'_> {
    /// Emits the ONNX for one graph node; the name of the tensor holding its value.
    fn node(
        &mut self,
        id: NodeId,
        params: &[Tensor<f32>],
        states: &[Tensor<f32>],
    ) -> Result<String, Diagnostic> {
        let node = self.graph.node(id);
        let arg = |k: usize| self.names[node.args[k].index()].clone();
        let args: Vec<String> = (0..node.args.len()).map(arg).collect();
        let name = match &node.op {
            Op::Input(i) => {
                let decl = &self.graph.inputs[*i];
                self.inputs
                    .push(self.value_info(&decl.name, &decl.shape, decl.dtype));
                if decl.shape.has_batch() && self.batched_input.is_none() {
                    self.batched_input = Some(decl.name.clone());
                }
                decl.name.clone()
            }
            Op::Param(i) => self.weights(&self.graph.params[*i].name, &params[*i]),
            Op::State(i) => self.weights(&self.graph.states[*i].name, &states[*i]),
            Op::Const(c) => self.constant(&[], vec![c.0 as f32]),
            Op::Unary(op) => {
                let x = args[0].clone();
                match op {
                    UnaryOp::Square => self.emit("Mul", vec![x.clone(), x], vec![], None),
                    UnaryOp::Step => {
                        let zero = self.constant(&[], vec![0.0]);
                        let positive = self.emit("Greater", vec![x, zero], vec![], None);
                        self.cast_to_float(positive)
                    }
                    _ => {
                        let onnx = match op {
                            UnaryOp::Neg => "Neg",
                            UnaryOp::Relu => "Relu",
                            UnaryOp::Sigmoid => "Sigmoid",
                            UnaryOp::Tanh => "Tanh",
                            UnaryOp::Exp => "Exp",
                            UnaryOp::Log => "Log",
                            UnaryOp::Abs => "Abs",
                            UnaryOp::Sqrt => "Sqrt",
                            UnaryOp::Sin => "Sin",
                            UnaryOp::Cos => "Cos",
                            UnaryOp::Floor => "Floor",
                            UnaryOp::Sign => "Sign",
                            UnaryOp::Square | UnaryOp::Step => unreachable!("handled above"),
                        };
                        self.emit(onnx, vec![x], vec![], None)
                    }
                }
            }
            Op::Binary(op) => {
                let onnx = match op {
                    BinaryOp::Add => "Add",
                    BinaryOp::Sub => "Sub",
                    BinaryOp::Mul => "Mul",
                    BinaryOp::Div => "Div",
                    BinaryOp::Equal => "Equal",
                };
                let value = self.emit(onnx, args, vec![], None);
                match op {
                    BinaryOp::Equal => self.cast_to_float(value),
                    _ => value,
                }
            }
            Op::Broadcast(shape) => {
                let shape = self.dims(shape)?;
                self.emit("Expand", vec![args[0].clone(), shape], vec![], None)
            }
            Op::Reduce(op, axes) => self.reduce(*op, axes, args[0].clone()),
            Op::MatMul => self.emit("MatMul", args, vec![], None),
            Op::Reshape(shape) => {
                // 0 copies the input's dimension: the batch, always first in both.
                let dims: Vec<i64> = shape
                    .0
                    .iter()
                    .map(|d| match d {
                        Dim::Batch => 0,
                        Dim::Fixed(n) => *n as i64,
                    })
                    .collect();
                let dims = self.int64s(&dims);
                self.emit("Reshape", vec![args[0].clone(), dims], vec![], None)
            }
            Op::Transpose(perm) => {
                let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
                self.emit("Transpose", args, vec![ints("perm", &perm)], None)
            }
            Op::Softmax { axis } => {
                self.emit("Softmax", args, vec![int("axis", *axis as i64)], None)
            }
            Op::LogSoftmax { axis } => {
                self.emit("LogSoftmax", args, vec![int("axis", *axis as i64)], None)
            }
            Op::Conv2d(window) => self.emit("Conv", args, window_attributes(window), None),
            Op::Pool(op, window) => {
                let mut attrs = window_attributes(window);
                let onnx = match op {
                    PoolOp::Max => "MaxPool",
                    PoolOp::Avg => {
                        // netc, as PyTorch by default, counts padding as zeros.
                        attrs.push(int("count_include_pad", 1));
                        "AveragePool"
                    }
                };
                self.emit(onnx, args, attrs, None)
            }
            Op::Concat(axis) => self.emit("Concat", args, vec![int("axis", *axis as i64)], None),
            Op::Slice { axis, start, len } => {
                let starts = self.int64s(&[*start as i64]);
                let ends = self.int64s(&[(start + len) as i64]);
                let axes = self.int64s(&[*axis as i64]);
                self.emit(
                    "Slice",
                    vec![args[0].clone(), starts, ends, axes],
                    vec![],
                    None,
                )
            }
            Op::BatchSize => {
                let batch = self.batch_dim()?;
                let float = self.cast_to_float(batch);
                let scalar = self.int64s(&[]);
                self.emit("Reshape", vec![float, scalar], vec![], None)
            }
            Op::Hyper(_)
            | Op::OneHot { .. }
            | Op::DropoutMask { .. }
            | Op::Conv2dGradInput(..)
            | Op::Conv2dGradWeight(_)
            | Op::PoolGrad(..) => return Err(self.unexportable(id)),
        };
        Ok(name)
    }

    /// E0514 for a node ONNX inference has no operator for.
    fn unexportable(&self, id: NodeId) -> Diagnostic {
        let node = self.graph.node(id);
        let op = node.op.to_string();
        let op = op.split(['(', '[', ' ']).next().unwrap_or("").to_string();
        let at = match node.origin.line {
            0 => String::new(),
            line => format!(" at {} line {line}", self.options.source),
        };
        Diagnostic::plain(
            Code::E0514,
            format!("`{op}` ({id}){at} cannot be exported to ONNX"),
        )
        .with_note(
            "an evaluation graph exports its forward operations; this one belongs to training",
        )
    }

    /// Appends an ONNX node with one output, named `output` or fresh; that name.
    fn emit(
        &mut self,
        op_type: &str,
        input: Vec<String>,
        attribute: Vec<AttributeProto>,
        output: Option<String>,
    ) -> String {
        let output = output.unwrap_or_else(|| self.fresh("t"));
        self.nodes.push(NodeProto {
            input,
            output: vec![output.clone()],
            name: format!("{op_type}_{}", self.nodes.len()),
            op_type: op_type.into(),
            attribute,
            ..Default::default()
        });
        output
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.fresh += 1;
        format!("{prefix}{}", self.fresh)
    }

    /// A parameter or state as an initializer under its `.net` name.
    fn weights(&mut self, name: &str, tensor: &Tensor<f32>) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: tensor.dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::FLOAT as i32,
            float_data: tensor.data.clone(),
            ..Default::default()
        });
        name.into()
    }

    /// A float initializer of these dimensions.
    fn constant(&mut self, dims: &[i64], values: Vec<f32>) -> String {
        let name = self.fresh("c");
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: DataType::FLOAT as i32,
            float_data: values,
            ..Default::default()
        });
        name
    }

    /// A 1-D int64 initializer (or a scalar shape `[]` when empty).
    fn int64s(&mut self, values: &[i64]) -> String {
        let name = self.fresh("c");
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: DataType::INT64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        name
    }

    /// The 1-D int64 tensor `[N]`: the batch read from the input, or the fixed one.
    fn batch_dim(&mut self) -> Result<String, Diagnostic> {
        if let Batch::Fixed(n) = self.options.batch {
            return Ok(self.int64s(&[n as i64]));
        }
        if let Some(batch) = &self.batch {
            return Ok(batch.clone());
        }
        let input = self.batched_input.clone().ok_or_else(|| {
            Diagnostic::plain(
                Code::E0514,
                "the output has a batch dimension that no input gives",
            )
        })?;
        let attrs = vec![int("start", 0), int("end", 1)];
        let batch = self.emit("Shape", vec![input], attrs, None);
        self.batch = Some(batch.clone());
        Ok(batch)
    }

    /// A shape as a 1-D int64 tensor, the batch read at run time unless it is fixed.
    fn dims(&mut self, shape: &Shape) -> Result<String, Diagnostic> {
        let fixed: Vec<i64> = shape
            .0
            .iter()
            .filter_map(|d| match d {
                Dim::Fixed(n) => Some(*n as i64),
                Dim::Batch => None,
            })
            .collect();
        if !shape.has_batch() {
            return Ok(self.int64s(&fixed));
        }
        let batch = self.batch_dim()?;
        let rest = self.int64s(&fixed);
        Ok(self.emit("Concat", vec![batch, rest], vec![int("axis", 0)], None))
    }

    fn reduce(&mut self, op: ReduceOp, axes: &[usize], x: String) -> String {
        let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
        let onnx = match op {
            ReduceOp::Sum => "ReduceSum",
            ReduceOp::Mean => "ReduceMean",
            ReduceOp::Max => "ReduceMax",
        };
        let keep = int("keepdims", 0);
        // ReduceSum took its axes as an input from opset 13, the others from 18.
        if op == ReduceOp::Sum || self.options.opset >= 18 {
            let axes = self.int64s(&axes);
            self.emit(onnx, vec![x, axes], vec![keep], None)
        } else {
            self.emit(onnx, vec![x], vec![ints("axes", &axes), keep], None)
        }
    }

    fn cast_to_float(&mut self, x: String) -> String {
        let to = int("to", DataType::FLOAT as i64);
        self.emit("Cast", vec![x], vec![to], None)
    }

    /// A graph input's or output's name, element type and shape.
    fn value_info(&self, name: &str, shape: &Shape, dtype: DType) -> ValueInfoProto {
        let dim = shape
            .0
            .iter()
            .map(|d| Dimension {
                value: Some(match (d, self.options.batch) {
                    (Dim::Fixed(n), _) => dimension::Value::DimValue(*n as i64),
                    (Dim::Batch, Batch::Fixed(n)) => dimension::Value::DimValue(n as i64),
                    (Dim::Batch, Batch::Dynamic) => dimension::Value::DimParam("N".into()),
                }),
                ..Default::default()
            })
            .collect();
        let elem_type = match dtype {
            DType::F32 => DataType::FLOAT,
            DType::I32 => DataType::INT32,
        };
        ValueInfoProto {
            name: name.into(),
            type_: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: elem_type as i32,
                    shape: Some(TensorShapeProto {
                        dim,
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }
    }
}

/// A convolution's or pooling window's attributes; netc pads both sides alike.
fn window_attributes(window: &Window) -> Vec<AttributeProto> {
    let [ph, pw] = window.padding.map(|p| p as i64);
    vec![
        ints("kernel_shape", &window.kernel.map(|k| k as i64)),
        ints("strides", &window.stride.map(|s| s as i64)),
        ints("pads", &[ph, pw, ph, pw]),
    ]
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INT.into(),
        i: value,
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INTS.into(),
        ints: values.to_vec(),
        ..Default::default()
    }
}
