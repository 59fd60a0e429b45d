//! `netc run --trace PATH`: the small parameters' values after every step, as JSON lines, so
//! that `netc surface` can draw the optimizer's path. A line is
//! `{"step": 12, "params": {"w": [0.51], "b": [0.2]}}`; the first line is step 0 (the weights
//! before the run's first step). Parameters of more than `MAX_ELEMENTS` elements are left
//! out: a path is drawn over two coordinates, and a layer's whole weight matrix per step
//! would be a large file.

use super::surface::Coordinate;
use crate::diagnostics::{Code, Diagnostic};
use crate::runtime::{EpochReport, Session, Watcher};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The largest parameter a trace records.
pub const MAX_ELEMENTS: usize = 64;

/// A trace being written.
pub struct Trace {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    /// The recorded parameters' indices and names.
    recorded: Vec<(usize, String)>,
}

impl Trace {
    /// Starts a trace at `path` with the session's current weights as its first line.
    pub fn create(path: PathBuf, session: &Session) -> Result<Trace, Diagnostic> {
        let file = std::fs::File::create(&path).map_err(|e| cannot(&path, &e))?;
        let recorded = (session.model.params.iter().enumerate())
            .filter(|(p, _)| session.params[*p].data.len() <= MAX_ELEMENTS)
            .map(|(p, param)| (p, param.name.clone()))
            .collect();
        let mut trace = Trace {
            path,
            file: std::io::BufWriter::new(file),
            recorded,
        };
        trace.write(session)?;
        Ok(trace)
    }

    fn write(&mut self, session: &Session) -> Result<(), Diagnostic> {
        let params: serde_json::Map<String, serde_json::Value> = (self.recorded.iter())
            .map(|(p, name)| (name.clone(), serde_json::json!(session.params[*p].data)))
            .collect();
        let line = serde_json::json!({ "step": session.step, "params": params });
        writeln!(self.file, "{line}").map_err(|e| cannot(&self.path, &e))
    }
}

fn cannot(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::plain(
        Code::E0512,
        format!("cannot write the trace {}: {e}", path.display()),
    )
}

impl Watcher for Trace {
    fn step(&mut self, session: &mut Session) -> Result<(), Diagnostic> {
        self.write(session)
    }

    fn epoch(&mut self, _: &mut Session, _: &[EpochReport]) -> Result<(), Diagnostic> {
        self.file.flush().map_err(|e| cannot(&self.path, &e))
    }

    fn end(&mut self, _: &[EpochReport]) -> Result<(), Diagnostic> {
        self.file.flush().map_err(|e| cannot(&self.path, &e))
    }
}

/// The two coordinates' values at every step of a trace; E0513 naming the line of the first
/// that lacks them.
pub fn read(
    path: &Path,
    coordinates: &[Coordinate; 2],
    names: [&str; 2],
) -> Result<Vec<[f64; 2]>, Diagnostic> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::plain(Code::E0504, format!("cannot read {}: {e}", path.display()))
    })?;
    let mut points = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |why: String| {
            Diagnostic::plain(Code::E0513, format!("{}:{}: {why}", path.display(), i + 1))
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let mut point = [0.0; 2];
        for (k, c) in coordinates.iter().enumerate() {
            let element = value["params"][names[k]][c.index].as_f64();
            point[k] = element.ok_or_else(|| {
                bad(format!(
                    "no value for {} (a trace records parameters of at most {MAX_ELEMENTS} elements)",
                    c.label
                ))
            })?;
        }
        points.push(point);
    }
    if points.is_empty() {
        return Err(Diagnostic::plain(
            Code::E0513,
            format!("{} has no steps", path.display()),
        ));
    }
    Ok(points)
}
