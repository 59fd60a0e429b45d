//! Pictures of training, drawn with plotters: the training curves of one or more runs
//! (`curves`), from the epoch reports a run makes or its `--log` files (`log`); a model's fit
//! to its data as training goes (`animate`); test images with their predicted labels
//! (`image_grid`); and the figures as TensorBoard event files (`tensorboard`). A picture is
//! rendered in memory, as SVG or PNG by the path's extension, and written to a temporary name
//! then renamed, so a viewer watching the file never sees half of one.
//!
//! Text is set in DejaVu Sans, read from Debian's `fonts-dejavu-core` (the set-up scripts
//! install it; `NETC_FONT` names another TrueType file), so that a picture looks the same on
//! every machine and SVG output is deterministic.

pub mod animate;
pub mod log;
pub mod surface;
pub mod tensorboard;
pub mod trace;

use crate::check::model::Metric;
use crate::diagnostics::{Code, Diagnostic};
use crate::runtime::{EpochReport, Session, Watcher};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Where the font is when `NETC_FONT` does not say.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// A picture's size in pixels (SVG user units).
const SIZE: (u32, u32) = (960, 400);

/// The colours of successive runs (and, in one run, of train and test).
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One run's epochs, named for the legend.
#[derive(Clone, Debug)]
pub struct Run {
    pub label: String,
    pub epochs: Vec<EpochReport>,
}

/// An image format, from a path's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// The format `path` names, or E0512 naming the flag that gave it.
    pub fn of(path: &Path, flag: &str) -> Result<Format, Diagnostic> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("svg") => Ok(Format::Svg),
            Some(e) if e.eq_ignore_ascii_case("png") => Ok(Format::Png),
            _ => Err(Diagnostic::plain(
                Code::E0512,
                format!(
                    "{flag} {} must end in .svg or .png: the extension says which to write",
                    path.display()
                ),
            )),
        }
    }
}

/// Registers the font with plotters once; E0512 when it cannot be read.
fn font() -> Result<(), Diagnostic> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        let path = std::env::var_os("NETC_FONT").map_or(FONT.into(), std::path::PathBuf::from);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType font", path.display()))
    });
    loaded.clone().map_err(|why| {
        Diagnostic::plain(Code::E0512, format!("cannot draw text: {why}")).with_note(
            "install Debian's fonts-dejavu-core (scripts/main does), or set NETC_FONT to a .ttf file",
        )
    })
}

/// Something drawn on any of plotters' backends.
pub trait Picture {
    /// Draws on `root`; a failure is plotters' message.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// How hard PNG compression works: a picture redrawn while training runs is written quickly
/// (a third of the time, three times the size), one drawn once is written small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    Quick,
    Small,
}

/// Renders `picture` on a canvas of `size` in `format` and returns the file's bytes.
pub fn render(
    (format, effort): (Format, Effort),
    size: (u32, u32),
    picture: &impl Picture,
) -> Result<Vec<u8>, Diagnostic> {
    font()?;
    let failed = |why: String| Diagnostic::plain(Code::E0512, format!("cannot draw: {why}"));
    match format {
        Format::Svg => {
            let mut text = String::new();
            {
                let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
                picture.draw(&root).map_err(failed)?;
                root.present().map_err(|e| failed(e.to_string()))?;
            }
            Ok(text.into_bytes())
        }
        Format::Png => {
            let pixels = pixels(size, picture)?;
            png_bytes(&pixels, size, effort).map_err(|e| failed(e.to_string()))
        }
    }
}

/// Renders `picture` as RGB pixels, row by row.
fn pixels(size: (u32, u32), picture: &impl Picture) -> Result<Vec<u8>, Diagnostic> {
    font()?;
    let failed = |why: String| Diagnostic::plain(Code::E0512, format!("cannot draw: {why}"));
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        picture.draw(&root).map_err(failed)?;
        root.present().map_err(|e| failed(e.to_string()))?;
    }
    Ok(pixels)
}

/// A white canvas with `title` at the top; what is below the title is returned.
fn canvas<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    (root.margin(6, 0, 0, 0))
        .titled(title, ("sans-serif", 18))
        .map_err(|e| e.to_string())
}

/// RGB pixels as a PNG file.
fn png_bytes(
    pixels: &[u8],
    (w, h): (u32, u32),
    effort: Effort,
) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        match effort {
            Effort::Quick => encoder.set_compression(png::Compression::Fast),
            Effort::Small => {
                encoder.set_compression(png::Compression::Best);
                encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
            }
        }
        let mut writer = encoder.write_header()?;
        writer.write_image_data(pixels)?;
    }
    Ok(out)
}

/// Writes a picture to `path` atomically (a temporary name, then a rename).
pub fn save(path: &Path, bytes: &[u8]) -> Result<(), Diagnostic> {
    crate::runtime::checkpoint::write_atomically(path, bytes).map_err(|e| {
        Diagnostic::plain(
            Code::E0512,
            format!("cannot write the picture {}: {e}", path.display()),
        )
    })
}

/// Draws the training curves of `runs` to `path`: loss against epoch on the left, and on the
/// right the runs' metric (accuracy when they measure it, else the first they report); train
/// solid, test dashed; `title` above.
pub fn curves(path: &Path, runs: &[Run], title: &str, effort: Effort) -> Result<(), Diagnostic> {
    let format = Format::of(path, "the picture")?;
    let bytes = render((format, effort), SIZE, &Curves { runs, title })?;
    save(path, &bytes)
}

/// `--plot`'s picture of a run's curves. It is redrawn after an epoch when drawing (as long
/// as it took last time; at first, `FIRST_GUESS`) costs at most 1% of that epoch's time, so no
/// epoch is slowed by more; epochs too short for that are drawn once the run ends.
pub struct LiveCurves {
    path: std::path::PathBuf,
    title: String,
    /// How long drawing takes.
    cost: std::time::Duration,
    /// Whether epochs have been reported since the last drawing.
    behind: bool,
}

/// What a drawing is taken to cost before the first one is timed: a quickly compressed PNG of
/// the curves takes about 4 ms here.
const FIRST_GUESS: std::time::Duration = std::time::Duration::from_millis(5);

impl LiveCurves {
    pub fn new(path: std::path::PathBuf, title: String) -> LiveCurves {
        LiveCurves {
            path,
            title,
            cost: FIRST_GUESS,
            behind: false,
        }
    }

    fn draw(&mut self, history: &[EpochReport]) -> Result<(), Diagnostic> {
        let started = std::time::Instant::now();
        let run = Run {
            label: String::new(),
            epochs: history.to_vec(),
        };
        curves(&self.path, &[run], &self.title, Effort::Quick)?;
        self.cost = started.elapsed();
        self.behind = false;
        Ok(())
    }
}

impl Watcher for LiveCurves {
    fn epoch(&mut self, _: &mut Session, history: &[EpochReport]) -> Result<(), Diagnostic> {
        self.behind = true;
        let epoch = history.last().map_or(0.0, |e| e.seconds);
        if self.cost.as_secs_f64() <= epoch / 100.0 {
            self.draw(history)?;
        }
        Ok(())
    }

    fn end(&mut self, history: &[EpochReport]) -> Result<(), Diagnostic> {
        if self.behind {
            self.draw(history)?;
        }
        Ok(())
    }
}

/// The training curves of some runs, under a title.
struct Curves<'a> {
    runs: &'a [Run],
    title: &'a str,
}

impl Picture for Curves<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        draw_curves(root, self.runs, self.title)
    }
}

/// One panel's line: a run's points, its colour, whether dashed, its legend entry.
struct Line {
    points: Vec<(f64, f64)>,
    colour: RGBColor,
    dashed: bool,
    label: String,
}

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    runs: &[Run],
    title: &str,
) -> Result<(), String> {
    let body = canvas(root, title)?;
    let one = runs.len() == 1;
    let label = |run: &Run, what: &str| {
        if one {
            what.to_string()
        } else {
            format!("{}: {what}", run.label)
        }
    };
    // Accuracy when any run measures it, else the first metric reported.
    let shown = (runs.iter().flat_map(|r| &r.epochs))
        .flat_map(|e| e.metrics.iter().map(|m| m.metric))
        .min_by_key(|&m| m != Metric::Accuracy);
    let mut losses = Vec::new();
    let mut measured = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        let colour = |k: usize| COLOURS[if one { k } else { r } % COLOURS.len()];
        let series = |f: &dyn Fn(&EpochReport) -> Option<f64>| -> Vec<(f64, f64)> {
            (run.epochs.iter())
                .filter_map(|e| Some((e.epoch as f64, f(e).filter(|v| v.is_finite())?)))
                .collect()
        };
        losses.push(Line {
            points: series(&|e| Some(e.train_loss)),
            colour: colour(0),
            dashed: false,
            label: label(run, "train loss"),
        });
        // Classifiers are tested by accuracy; a regression's test loss goes with its train loss.
        let classifier = run.epochs.iter().any(|e| e.test_accuracy().is_some());
        if !classifier {
            losses.push(Line {
                points: series(&|e| Some(e.test_loss)),
                colour: colour(1),
                dashed: true,
                label: label(run, "test loss"),
            });
        }
        let Some(metric) = shown else { continue };
        measured.push(Line {
            points: series(&|e| e.metric(metric).and_then(|m| m.train)),
            colour: colour(if one { 2 } else { 0 }),
            dashed: false,
            label: label(run, &format!("train {}", metric.short())),
        });
        measured.push(Line {
            points: series(&|e| e.metric(metric).and_then(|m| m.test)),
            colour: colour(if one { 3 } else { 0 }),
            dashed: true,
            label: label(run, &format!("test {}", metric.short())),
        });
    }
    measured.retain(|l| !l.points.is_empty());
    let Some(metric) = shown.filter(|_| !measured.is_empty()) else {
        return panel(&body, "loss", &losses, false);
    };
    let (left, right) = body.split_horizontally(body.dim_in_pixel().0 / 2);
    panel(&left, "loss", &losses, false)?;
    let name = metric.name().replace('_', " ");
    panel(&right, &name, &measured, metric == Metric::Accuracy)
}

/// One panel: the lines against epoch, axes labelled, a legend.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    y_name: &str,
    lines: &[Line],
    unit_interval: bool,
) -> Result<(), String> {
    let points = lines.iter().flat_map(|l| &l.points);
    let last_epoch = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let (low, high) = points.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (low, high) = if low > high { (0.0, 1.0) } else { (low, high) };
    // A loss falling by orders of magnitude is read on a log scale.
    if !unit_interval && low > 0.0 && high / low > 30.0 {
        let range = (low / 1.5..high * 1.5).log_scale();
        let y_name = format!("{y_name} (log scale)");
        return draw_panel(area, last_epoch, range, &y_name, lines, unit_interval);
    }
    let pad = ((high - low) * 0.08).max(1e-3);
    let (low, high) = if unit_interval {
        ((low - pad).max(0.0), (high + pad).min(1.0))
    } else {
        (
            (low - pad).max(if low >= 0.0 { 0.0 } else { f64::MIN }),
            high + pad,
        )
    };
    draw_panel(area, last_epoch, low..high, y_name, lines, unit_interval)
}

/// A y tick label: up to three decimals, and below 0.001 (a log-scale loss) one significant
/// digit with its exponent, `1e-4`, rather than a misleading `0`.
fn axis_number(y: f64) -> String {
    if y != 0.0 && y.abs() < 1e-3 {
        let text = format!("{y:.1e}");
        return text.replace(".0e", "e");
    }
    format!("{y:.3}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

/// `panel` on a y axis of `y_range` (linear or logarithmic).
fn draw_panel<DB: DrawingBackend, Y>(
    area: &DrawingArea<DB, Shift>,
    last_epoch: f64,
    y_range: Y,
    y_name: &str,
    lines: &[Line],
    unit_interval: bool,
) -> Result<(), String>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(1f64.min(last_epoch)..last_epoch.max(2.0), y_range)
        .map_err(err)?;
    let integer_epochs = last_epoch <= 20.0;
    house_style(
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_name)
            .x_labels(if integer_epochs {
                last_epoch as usize
            } else {
                10
            })
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| axis_number(*y)),
    )
    .draw()
    .map_err(err)?;
    for line in lines {
        let style = line.colour.stroke_width(2);
        let series = if line.dashed {
            chart.draw_series(DashedLineSeries::new(line.points.clone(), 6, 4, style))
        } else {
            chart.draw_series(LineSeries::new(line.points.clone(), style))
        };
        let colour = line.colour;
        let dashed = line.dashed;
        series
            .map_err(err)?
            .label(&line.label)
            .legend(move |(x, y)| {
                let style = colour.stroke_width(2);
                let gap = if dashed { 8..12 } else { 10..10 };
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (gap.start, 0)], style)
                    + PathElement::new(vec![(gap.end, 0), (20, 0)], style)
            });
        if line.points.len() == 1 {
            // One epoch is a point, not a line: mark it.
            chart
                .draw_series(PointSeries::of_element(
                    line.points.clone(),
                    4,
                    line.colour.filled(),
                    &|c, s, st| Circle::new(c, s, st),
                ))
                .map_err(err)?;
        }
    }
    let position = if unit_interval {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    };
    legend(&mut chart, position)
}

/// The axes' look every chart shares: label sizes, and a faint grid of major lines only.
fn house_style<'m, 'a, 'b, X, Y, DB>(
    mesh: &'m mut plotters::chart::MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut plotters::chart::MeshStyle<'a, 'b, X, Y, DB>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
    DB: DrawingBackend,
{
    mesh.label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
}

/// A chart's legend at `position`, on a light box.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| e.to_string())
}

/// An image with its predicted and true labels.
#[derive(Clone, Debug)]
pub struct Labelled {
    /// Grey levels in 0..=1, row by row.
    pub pixels: Vec<f32>,
    pub width: usize,
    pub predicted: String,
    pub actual: String,
}

impl Labelled {
    fn wrong(&self) -> bool {
        self.predicted != self.actual
    }
}

/// Draws `images` in a grid, each under its predicted label (red when wrong, with the true
/// label beneath), as d2l's `show_images` does.
pub fn image_grid(path: &Path, images: &[Labelled], title: &str) -> Result<(), Diagnostic> {
    let format = Format::of(path, "--grid")?;
    let grid = Grid::new(images);
    let bytes = render(
        (format, Effort::Small),
        grid.size(),
        &Grid { title, ..grid },
    )?;
    save(path, &bytes)
}

/// A grid of labelled images: `columns` across, each image scaled to `cell` pixels.
struct Grid<'a> {
    images: &'a [Labelled],
    title: &'a str,
    columns: usize,
    scale: usize,
}

/// Pixels above each image for its two labels, and around it.
const LABELS: usize = 34;
const GAP: usize = 10;
const TITLE: usize = 34;

impl<'a> Grid<'a> {
    fn new(images: &'a [Labelled]) -> Grid<'a> {
        let width = images.first().map_or(1, |i| i.width.max(1));
        Grid {
            images,
            title: "",
            columns: images.len().clamp(1, 8),
            // Fashion-MNIST's 28 pixels become 112: large enough to see the garment.
            scale: (112 / width).max(1),
        }
    }

    fn cell(&self) -> (usize, usize) {
        let image = self.images.first();
        let width = image.map_or(1, |i| i.width.max(1));
        let height = image.map_or(1, |i| i.pixels.len() / width.max(1));
        (width * self.scale, height * self.scale)
    }

    fn size(&self) -> (u32, u32) {
        let (w, h) = self.cell();
        let rows = self.images.len().div_ceil(self.columns).max(1);
        let width = self.columns * (w + GAP) + GAP;
        let height = TITLE + rows * (h + LABELS + GAP) + GAP;
        (width.max(360) as u32, height as u32)
    }
}

impl Picture for Grid<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let body = canvas(root, self.title)?;
        let (w, h) = self.cell();
        let red = RGBColor(200, 30, 30);
        for (i, image) in self.images.iter().enumerate() {
            let (row, column) = (i / self.columns, i % self.columns);
            let x = (GAP + column * (w + GAP)) as i32;
            let y = (row * (h + LABELS + GAP)) as i32;
            let colour = if image.wrong() { red } else { BLACK };
            let style = TextStyle::from(("sans-serif", 13)).color(&colour);
            body.draw(&Text::new(image.predicted.clone(), (x, y), style))
                .map_err(err)?;
            if image.wrong() {
                let grey = RGBColor(100, 100, 100);
                let style = TextStyle::from(("sans-serif", 12)).color(&grey);
                let truth = format!("true: {}", image.actual);
                body.draw(&Text::new(truth, (x, y + 15), style))
                    .map_err(err)?;
            }
            let top = y + LABELS as i32 - 4;
            // Dark garments on a light ground, as d2l shows them.
            for (p, &v) in image.pixels.iter().enumerate() {
                let (py, px) = (p / image.width, p % image.width);
                let level = (255.0 * (1.0 - v.clamp(0.0, 1.0))).round() as u8;
                let corner = (x + (px * self.scale) as i32, top + (py * self.scale) as i32);
                let end = (corner.0 + self.scale as i32, corner.1 + self.scale as i32);
                let shade = RGBColor(level, level, level).filled();
                body.draw(&Rectangle::new([corner, end], shade))
                    .map_err(err)?;
            }
            let frame = [(x - 1, top - 1), (x + w as i32, top + h as i32)];
            let border = if image.wrong() {
                red.stroke_width(2)
            } else {
                BLACK.mix(0.2).stroke_width(1)
            };
            body.draw(&Rectangle::new(frame, border)).map_err(err)?;
        }
        Ok(())
    }
}
