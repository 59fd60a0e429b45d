//! The one diagnostic type, its stable codes, and its two renderings: codespan-reporting for people,
//! JSON lines for editors. This is the only module that knows codespan-reporting.

use crate::source::{SourceFile, Span};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;

macro_rules! codes {
    ($($code:ident => $title:literal,)*) => {
        /// A stable diagnostic code: `E` + stage digit + two digits, `W` for warnings.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($code,)* }

        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$code,)*];

            /// The code as printed, e.g. `E0301`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$code => stringify!($code),)* }
            }

            /// A one-line title.
            pub fn title(self) -> &'static str {
                match self { $(Code::$code => $title,)* }
            }

            /// The long explanation printed by `netc explain`.
            pub fn explanation(self) -> &'static str {
                match self {
                    $(Code::$code => include_str!(concat!("../docs/errors/", stringify!($code), ".md")),)*
                }
            }
        }
    };
}

codes! {
    E0101 => "syntax error",
    E0102 => "invalid number literal",
    E0103 => "nesting too deep",
    E0201 => "undefined name",
    E0202 => "duplicate definition",
    E0203 => "unknown function",
    E0204 => "unknown layer",
    E0205 => "unknown loss",
    E0206 => "unknown optimizer",
    E0207 => "unknown argument",
    E0208 => "unknown initializer",
    E0209 => "section given twice",
    E0210 => "missing section",
    E0211 => "unknown metric",
    E0212 => "implicit operand is missing or ambiguous",
    E0213 => "block uses itself",
    E0214 => "block ends with layers after equations",
    E0215 => "unknown learning-rate schedule",
    E0301 => "matrix product dimensions differ",
    E0302 => "shapes do not broadcast",
    E0303 => "matrix product needs vectors or matrices",
    E0304 => "convolution or pooling window does not fit",
    E0305 => "layer input has the wrong rank",
    E0306 => "reshape changes the number of elements",
    E0307 => "axis out of range",
    E0308 => "prediction does not match the label or target",
    E0309 => "loss is not a scalar",
    E0310 => "dimension or tensor size out of range",
    E0311 => "invalid permutation",
    E0312 => "concatenated shapes differ",
    E0313 => "uses of a shared block do not agree",
    E0401 => "wrong argument type",
    E0402 => "class label used as a tensor",
    E0403 => "missing required argument",
    E0404 => "too many positional arguments",
    E0405 => "hyperparameter out of range",
    E0406 => "argument given twice",
    E0407 => "initializer does not fit the parameter's shape",
    E0408 => "unknown block parameter type",
    E0501 => "unknown training setting",
    E0502 => "training setting out of range",
    E0503 => "metric does not apply to this model",
    E0504 => "data source not found",
    E0505 => "malformed data file",
    E0506 => "bad CSV record",
    E0507 => "data does not fit the model",
    E0508 => "checkpoint does not fit the model",
    E0509 => "training diverged",
    E0510 => "the JIT cannot compile this model",
    E0511 => "not enough memory for this run",
    E0512 => "an output file cannot be written",
    E0513 => "bad training log",
    E0514 => "the model cannot be exported to ONNX",
    E0515 => "the processes of a distributed run disagree",
    E0516 => "a distributed run cannot go on",
    W0201 => "parameter does not reach the loss",
    W0202 => "softmax before cross-entropy",
    W0203 => "very large learning rate",
    W0204 => "binary cross-entropy of raw scores",
}

impl Code {
    /// Looks a code up by its printed form, case-insensitively.
    pub fn parse(text: &str) -> Option<Code> {
        Code::ALL
            .iter()
            .copied()
            .find(|code| code.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// Warnings never stop compilation.
    pub fn severity(self) -> Severity {
        if self.as_str().starts_with('W') {
            Severity::Warning
        } else {
            Severity::Error
        }
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A span with a message; the primary label marks the fault, secondary ones the other half.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
    pub primary: bool,
}

/// A problem found in a model file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with `code` and `message` and its primary label.
    pub fn new(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            labels: vec![Label {
                span,
                message: label.into(),
                primary: true,
            }],
            notes: Vec::new(),
            help: None,
        }
    }

    /// A diagnostic about something outside the model file (data, checkpoints, memory, a
    /// diverged run): it has no label.
    pub fn plain(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Adds a secondary label pointing at the other half of a mismatch.
    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    /// Adds a note stating the rule that was broken.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Sets the help line: a concrete fix.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Errors stop compilation; warnings do not.
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }

    /// The primary span.
    pub fn span(&self) -> Span {
        self.labels
            .iter()
            .find(|label| label.primary)
            .map_or(Span::default(), |label| label.span)
    }
}

/// True when any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

/// Keeps a span inside the text and on character boundaries, so rendering never fails.
fn clamp(source: &SourceFile, span: Span) -> std::ops::Range<usize> {
    let len = source.text.len();
    let fix = |mut at: usize| {
        at = at.min(len);
        while !source.text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    let start = fix(span.start as usize);
    start..fix(span.end as usize).max(start)
}

fn to_codespan(source: &SourceFile, diagnostic: &Diagnostic) -> cs::Diagnostic<()> {
    let head = match diagnostic.severity() {
        Severity::Error => cs::Diagnostic::error(),
        Severity::Warning => cs::Diagnostic::warning(),
    };
    let labels = diagnostic
        .labels
        .iter()
        .map(|label| {
            let style = if label.primary {
                cs::LabelStyle::Primary
            } else {
                cs::LabelStyle::Secondary
            };
            cs::Label::new(style, (), clamp(source, label.span)).with_message(&label.message)
        })
        .collect();
    let mut notes: Vec<String> = diagnostic
        .notes
        .iter()
        .map(|n| format!("note: {n}"))
        .collect();
    if let Some(help) = &diagnostic.help {
        notes.push(format!("help: {help}"));
    }
    head.with_code(diagnostic.code.as_str())
        .with_message(&diagnostic.message)
        .with_labels(labels)
        .with_notes(notes)
}

/// Lines longer than this many bytes are shown as a window around their first label.
const MAX_SHOWN_LINE: usize = 160;

/// A diagnostic rendered against `source`, with colour codes when `ansi`. A line too long to
/// show (a 100 KB line of generated numbers) is cut to a window around the label, with `…` for
/// what is left out; the location printed is still the real line and column.
fn rendered(source: &SourceFile, diagnostic: &Diagnostic, ansi: bool) -> String {
    use term::termcolor::{Buffer, WriteColor};
    let (shown, moved) = shortened(source, diagnostic);
    let file = SimpleFile::new(&source.name, &shown.text);
    let mut buffer = if ansi {
        Buffer::ansi()
    } else {
        Buffer::no_color()
    };
    let config = term::Config::default();
    let written = term::emit_to_write_style(
        &mut buffer as &mut dyn WriteColor,
        &config,
        &file,
        &to_codespan(&shown, &moved),
    );
    let text = String::from_utf8_lossy(buffer.as_slice()).into_owned();
    if written.is_err() {
        return format!("{}: {}\n", diagnostic.code.as_str(), diagnostic.message);
    }
    if moved.labels.is_empty() || shown.text.len() == source.text.len() {
        return text;
    }
    let at = |file: &SourceFile, span: Span| {
        let start = clamp(file, span).start as u32;
        let (line, column) = file.line_col(start);
        format!("{}:{line}:{column}", file.name)
    };
    text.replacen(&at(&shown, moved.span()), &at(source, diagnostic.span()), 1)
}

/// The source as shown for one diagnostic, and the diagnostic with its spans moved to match:
/// each overlong line keeps a window around the first label that starts on it.
fn shortened(source: &SourceFile, diagnostic: &Diagnostic) -> (SourceFile, Diagnostic) {
    let text = &source.text;
    let boundary = |mut at: usize| {
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    // Per line: (start, end) of the original kept, the line's end, and where the kept part
    // starts in the shown text.
    let mut kept: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut shown = String::with_capacity(text.len().min(1 << 16));
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n').len();
        let (start, end) = if body <= MAX_SHOWN_LINE {
            (offset, offset + line.len())
        } else {
            let anchor = diagnostic
                .labels
                .iter()
                .map(|l| l.span.start as usize)
                .filter(|s| (offset..offset + body).contains(s))
                .min()
                .unwrap_or(offset);
            let start = boundary(anchor.saturating_sub(MAX_SHOWN_LINE / 3).max(offset));
            (start, boundary((start + MAX_SHOWN_LINE).min(offset + body)))
        };
        if start > offset {
            shown.push('…');
        }
        kept.push((start, end, offset + line.len(), shown.len()));
        shown.push_str(&text[start..end]);
        if end < offset + body {
            shown.push('…');
        }
        if end < offset + line.len() && line.ends_with('\n') {
            shown.push('\n');
        }
        offset += line.len();
    }
    let map = |at: u32| -> u32 {
        let at = at as usize;
        let moved = match kept.iter().find(|&&(_, _, line_end, _)| at <= line_end) {
            Some(&(start, end, _, to)) => to + at.clamp(start, end) - start,
            None => shown.len(),
        };
        moved as u32
    };
    let mut moved = diagnostic.clone();
    for label in &mut moved.labels {
        label.span = Span {
            start: map(label.span.start),
            end: map(label.span.end).max(map(label.span.start)),
        };
    }
    (SourceFile::new(source.name.clone(), shown), moved)
}

/// Renders diagnostics for a terminal, without colour (as snapshots and pipes want them).
pub fn render(source: &SourceFile, diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| rendered(source, d, false))
        .collect()
}

/// Writes diagnostics to standard error, coloured when it is a terminal.
pub fn emit_to_stderr(source: &SourceFile, diagnostics: &[Diagnostic]) {
    use std::io::{IsTerminal, Write};
    let ansi = std::io::stderr().is_terminal();
    let mut stderr = std::io::stderr().lock();
    for diagnostic in diagnostics {
        // A failed write to stderr leaves nothing better to report to.
        let _ = stderr.write_all(rendered(source, diagnostic, ansi).as_bytes());
    }
}

/// One diagnostic as a JSON object (one line), for editors.
pub fn to_json(source: &SourceFile, diagnostic: &Diagnostic) -> String {
    use serde_json::json;
    let position = |span: Span| {
        let range = clamp(source, span);
        let (line, column) = source.line_col(range.start as u32);
        let (end_line, end_column) = source.line_col(range.end as u32);
        json!({
            "line": line, "column": column, "end_line": end_line, "end_column": end_column,
            "byte_start": range.start, "byte_end": range.end,
        })
    };
    let labels: Vec<_> = diagnostic
        .labels
        .iter()
        .map(|label| {
            let mut value = position(label.span);
            value["primary"] = json!(label.primary);
            value["message"] = json!(label.message);
            value
        })
        .collect();
    let mut value = position(diagnostic.span());
    let fields = json!({
        "code": diagnostic.code.as_str(),
        "severity": match diagnostic.severity() { Severity::Error => "error", Severity::Warning => "warning" },
        "message": diagnostic.message,
        "file": source.name,
        "labels": labels,
        "notes": diagnostic.notes,
        "help": diagnostic.help,
    });
    if let (Some(object), Some(extra)) = (value.as_object_mut(), fields.as_object()) {
        object.extend(extra.clone());
    }
    value.to_string()
}
