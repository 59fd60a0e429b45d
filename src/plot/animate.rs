//! `--animate`: a model with one real output drawn against its first input as training goes,
//! the training data as points and the model's prediction as a line, one frame per epoch or
//! every N steps.
//! Other inputs are held at their mean over the training set. A `.gif` collects every frame
//! and is written when the run ends; a `.png` or `.svg` is the latest frame, redrawn after
//! every epoch.

use super::{render, save, Effort, Format, Picture, COLOURS};
use crate::check::model::LabelKind;
use crate::data::{Dataset, Features};
use crate::diagnostics::{Code, Diagnostic};
use crate::runtime::{EpochReport, Session, Watcher};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::PathBuf;

/// A frame's size in pixels.
const SIZE: (u32, u32) = (640, 420);

/// Points along the prediction's line.
const SAMPLES: usize = 101;

/// Training examples drawn as points, at most (every k-th beyond that).
const MAX_POINTS: usize = 400;

/// Hundredths of a second each frame shows, and the last one.
const FRAME_DELAY: u16 = 20;
const LAST_FRAME_DELAY: u16 = 200;

/// The frames of an animation, and what they are drawn from.
pub struct Animation {
    path: PathBuf,
    format: Format,
    title: String,
    /// The training examples shown: (first input, target).
    points: Vec<(f64, f64)>,
    /// The inputs the prediction is computed at: the first input swept across its range.
    grid: Dataset,
    sweep: Vec<f64>,
    x_range: (f64, f64),
    y_range: (f64, f64),
    /// The axes' names: the input (and which of its features) and the target.
    names: (String, String),
    encoder: Option<gif::Encoder<Vec<u8>>>,
    /// The batch the session's steps were compiled for.
    batch: usize,
    /// A frame every this many steps, instead of one per epoch.
    every: Option<u64>,
    /// The last frame's pixels, shown longer when the run ends.
    last: Option<Vec<u8>>,
}

impl Animation {
    /// An animation of a model trained on `train`, or E0512 when the model has not exactly
    /// one real output or the path is not a picture.
    pub fn new(
        path: PathBuf,
        title: String,
        (session, batch): (&Session, usize),
        train: &Dataset,
        every: Option<u64>,
    ) -> Result<Animation, Diagnostic> {
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("gif") => None,
            _ => Some(Format::of(&path, "--animate").map_err(|d| {
                d.with_note("--animate also writes .gif: every epoch's frame in one animation")
            })?),
        };
        let real = matches!(
            session.model.label.as_ref().map(|l| &l.kind),
            Some(LabelKind::Target(_))
        );
        if !real || train.target_size() != 1 || train.feature_size() == 0 || train.len == 0 {
            return Err(Diagnostic::plain(
                Code::E0512,
                format!(
                    "--animate draws a model with one real output against its first input; {} predicts {}",
                    session.model.name,
                    if real { format!("{} values", train.target_size()) } else { "a class".into() }
                ),
            ));
        }
        let size = train.feature_size();
        let feature = |row: usize, k: usize| f64::from(train.features.get(row * size + k));
        let stride = train.len.div_ceil(MAX_POINTS);
        let points: Vec<(f64, f64)> = (0..train.len)
            .step_by(stride)
            .map(|row| (feature(row, 0), f64::from(train.targets[row])))
            .collect();
        let span = |values: &mut dyn Iterator<Item = f64>| {
            let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            let pad = ((hi - lo) * 0.08).max(1e-3);
            (lo - pad, hi + pad)
        };
        let x_range = span(&mut points.iter().map(|p| p.0));
        let y_range = span(&mut points.iter().map(|p| p.1));
        let means: Vec<f32> = (0..size)
            .map(|k| {
                ((0..train.len).map(|row| feature(row, k)).sum::<f64>() / train.len as f64) as f32
            })
            .collect();
        let sweep: Vec<f64> = (0..SAMPLES)
            .map(|i| x_range.0 + (x_range.1 - x_range.0) * i as f64 / (SAMPLES - 1) as f64)
            .collect();
        let mut features = Vec::with_capacity(SAMPLES * size);
        for &x in &sweep {
            features.push(x as f32);
            features.extend_from_slice(&means[1..]);
        }
        let grid = Dataset {
            len: SAMPLES,
            feature_dims: train.feature_dims.clone(),
            features: Features::F32(features),
            target_dims: train.target_dims.clone(),
            targets: vec![0.0; SAMPLES],
            origin: "the prediction's grid".into(),
            lines: Vec::new(),
        };
        let encoder = match format {
            Some(_) => None,
            None => {
                let mut encoder = gif::Encoder::new(Vec::new(), SIZE.0 as u16, SIZE.1 as u16, &[])
                    .map_err(|e| {
                        Diagnostic::plain(Code::E0512, format!("cannot start a GIF: {e}"))
                    })?;
                encoder.set_repeat(gif::Repeat::Infinite).map_err(|e| {
                    Diagnostic::plain(Code::E0512, format!("cannot start a GIF: {e}"))
                })?;
                Some(encoder)
            }
        };
        let input = session
            .model
            .inputs
            .first()
            .map_or("input".into(), |i| i.name.clone());
        let x_name = if size > 1 {
            format!("{input}[0] (the rest at their means)")
        } else {
            input
        };
        let y_name = session
            .model
            .label
            .as_ref()
            .map_or("output".into(), |l| l.name.clone());
        Ok(Animation {
            path,
            names: (x_name, y_name),
            format: format.unwrap_or(Format::Png),
            title,
            points,
            grid,
            sweep,
            x_range,
            y_range,
            encoder,
            batch,
            every,
            last: None,
        })
    }

    /// Adds a frame to the GIF.
    fn add_frame(&mut self, pixels: &[u8], delay: u16) -> Result<(), Diagnostic> {
        let Some(encoder) = &mut self.encoder else {
            return Ok(());
        };
        let mut frame = gif::Frame::from_rgb_speed(SIZE.0 as u16, SIZE.1 as u16, pixels, 10);
        frame.delay = delay;
        encoder
            .write_frame(&frame)
            .map_err(|e| Diagnostic::plain(Code::E0512, format!("cannot add a GIF frame: {e}")))
    }
}

impl Animation {
    /// Draws the model's prediction now as a frame captioned `caption`.
    fn frame(&mut self, session: &mut Session, caption: String) -> Result<(), Diagnostic> {
        let mut line = Vec::with_capacity(SAMPLES);
        for (_, output) in session.predict(&self.grid, self.batch) {
            let output = output.expect("a model with a real output has one");
            let per = output.data.len() / output.dims[0].max(1);
            line.extend(output.data.chunks(per).map(|v| f64::from(v[0])));
        }
        let frame = Frame {
            title: &self.title,
            caption,
            points: &self.points,
            line: self.sweep.iter().copied().zip(line).collect(),
            x_range: self.x_range,
            y_range: self.y_range,
            names: &self.names,
        };
        if self.encoder.is_none() {
            let bytes = render((self.format, Effort::Quick), SIZE, &frame)?;
            return save(&self.path, &bytes);
        }
        let pixels = super::pixels(SIZE, &frame)?;
        if let Some(previous) = self.last.replace(pixels) {
            self.add_frame(&previous, FRAME_DELAY)?;
        }
        Ok(())
    }
}

impl Watcher for Animation {
    /// A frame every `every` steps, when asked for.
    fn step(&mut self, session: &mut Session) -> Result<(), Diagnostic> {
        match self.every {
            Some(n) if session.step.is_multiple_of(n) => {
                let caption = format!("step {} (epoch {})", session.step, session.epoch + 1);
                self.frame(session, caption)
            }
            _ => Ok(()),
        }
    }

    /// A frame every epoch, unless frames are by steps.
    fn epoch(&mut self, session: &mut Session, history: &[EpochReport]) -> Result<(), Diagnostic> {
        match (self.every, history.last()) {
            (None, Some(report)) => {
                let caption = format!(
                    "epoch {}: train loss {:.4}, test loss {:.4}",
                    report.epoch, report.train_loss, report.test_loss
                );
                self.frame(session, caption)
            }
            _ => Ok(()),
        }
    }

    /// The last frame, held longer, and the whole GIF, written at once.
    fn end(&mut self, _: &[EpochReport]) -> Result<(), Diagnostic> {
        if let Some(last) = self.last.take() {
            self.add_frame(&last, LAST_FRAME_DELAY)?;
        }
        match self.encoder.take() {
            Some(encoder) => {
                let bytes = encoder.into_inner().map_err(|e| {
                    Diagnostic::plain(Code::E0512, format!("cannot finish the GIF: {e}"))
                })?;
                save(&self.path, &bytes)
            }
            None => Ok(()),
        }
    }
}

/// One frame: the data and the prediction's line.
struct Frame<'a> {
    title: &'a str,
    caption: String,
    points: &'a [(f64, f64)],
    line: Vec<(f64, f64)>,
    x_range: (f64, f64),
    y_range: (f64, f64),
    names: &'a (String, String),
}

impl Picture for Frame<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let body = super::canvas(root, self.title)?;
        let mut chart = ChartBuilder::on(&body)
            .caption(&self.caption, ("sans-serif", 14))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(
                self.x_range.0..self.x_range.1,
                self.y_range.0..self.y_range.1,
            )
            .map_err(err)?;
        super::house_style(
            chart
                .configure_mesh()
                .x_desc(&self.names.0)
                .y_desc(&self.names.1),
        )
        .draw()
        .map_err(err)?;
        let dots = COLOURS[0].mix(0.45).filled();
        chart
            .draw_series(self.points.iter().map(|&p| Circle::new(p, 3, dots)))
            .map_err(err)?
            .label("training data")
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, dots));
        let red = COLOURS[3];
        chart
            .draw_series(LineSeries::new(
                self.line.iter().copied(),
                red.stroke_width(3),
            ))
            .map_err(err)?
            .label("prediction")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(3)));
        super::legend(&mut chart, SeriesLabelPosition::UpperLeft)
    }
}
