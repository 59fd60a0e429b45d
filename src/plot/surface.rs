//! `netc surface`: the loss over a grid of two coordinates of the parameters (two scalar
//! parameters, or one element each of two), the others held where they are, drawn as a 3-D
//! surface beside a contour map, with the path the optimizer took across it when a `--trace`
//! of the run is given. Each point of the grid is one evaluation of the loss on (at most
//! `MAX_EXAMPLES` of) the training set with the evaluation graph.

use super::{render, save, Effort, Format, Picture};
use crate::check::model::Model;
use crate::data::Dataset;
use crate::diagnostics::{Code, Diagnostic};
use crate::runtime::Session;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// Grid points along each coordinate.
const STEPS: usize = 41;

/// Training examples the loss is computed on, at most: the first ones.
pub const MAX_EXAMPLES: usize = 2000;

/// The picture's size.
const SIZE: (u32, u32) = (1100, 500);

/// One coordinate of the parameters: element `index` of parameter `param`.
#[derive(Clone, Debug, PartialEq)]
pub struct Coordinate {
    pub param: usize,
    pub index: usize,
    /// As the user names it: `w`, or `dense1.weight[3]` for an element of a larger one.
    pub label: String,
}

/// The two coordinates `spec` names (`w,b`, or `dense1.weight[0],dense1.bias[0]`), or with no
/// spec the model's two parameters of one element each; E0512 otherwise.
pub fn coordinates(model: &Model, spec: Option<&str>) -> Result<[Coordinate; 2], Diagnostic> {
    let size = |p: usize| model.params[p].shape.elements_per_example() as usize;
    let Some(spec) = spec else {
        let scalars: Vec<usize> = (0..model.params.len()).filter(|&p| size(p) == 1).collect();
        let names: Vec<&str> = model.params.iter().map(|p| p.name.as_str()).collect();
        return match scalars[..] {
            [a, b] if model.params.len() == 2 => Ok([a, b].map(|p| Coordinate {
                param: p,
                index: 0,
                label: model.params[p].name.clone(),
            })),
            _ => Err(Diagnostic::plain(
                Code::E0512,
                format!(
                    "name two coordinates with --params (the model's parameters are {})",
                    names.join(", ")
                ),
            )
            .with_note(
                "for example `--params w,b`, or `--params dense1.weight[0],dense1.bias[0]`",
            )),
        };
    };
    let parse = |text: &str| -> Result<Coordinate, Diagnostic> {
        let text = text.trim();
        let (name, index) = match text.strip_suffix(']').and_then(|t| t.split_once('[')) {
            Some((name, index)) => (name, index.trim().parse::<usize>().ok()),
            None => (text, Some(0)),
        };
        let param = model.params.iter().position(|p| p.name == name);
        let bad = |why: String| Diagnostic::plain(Code::E0512, format!("--params {text}: {why}"));
        let param = param.ok_or_else(|| {
            let names: Vec<&str> = model.params.iter().map(|p| p.name.as_str()).collect();
            bad(format!(
                "no parameter `{name}` (there are {})",
                names.join(", ")
            ))
        })?;
        let elements = size(param);
        match index {
            Some(i) if i < elements => Ok(Coordinate {
                param,
                index: i,
                label: if elements == 1 {
                    name.to_string()
                } else {
                    format!("{name}[{i}]")
                },
            }),
            _ => Err(bad(format!(
                "`{name}` has {elements} elements: give an index 0 to {}",
                elements.saturating_sub(1)
            ))),
        }
    };
    let parts: Vec<&str> = spec.split(',').collect();
    match parts[..] {
        [a, b] => {
            let (a, b) = (parse(a)?, parse(b)?);
            if (a.param, a.index) == (b.param, b.index) {
                return Err(Diagnostic::plain(
                    Code::E0512,
                    format!("--params {spec}: the two coordinates are the same"),
                ));
            }
            Ok([a, b])
        }
        _ => Err(Diagnostic::plain(
            Code::E0512,
            format!("--params {spec}: give two coordinates, separated by a comma"),
        )),
    }
}

/// The loss over a grid around the session's weights (and around `path`, the coordinates
/// the optimizer went through), drawn to `out`.
pub fn surface(
    session: &mut Session,
    train: &Dataset,
    coordinates: &[Coordinate; 2],
    path: &[[f64; 2]],
    out: &Path,
    title: &str,
) -> Result<(), Diagnostic> {
    let format = Format::of(out, "-o")?;
    let subset = train.head(MAX_EXAMPLES);
    let value = |s: &Session, c: &Coordinate| f64::from(s.params[c.param].data[c.index]);
    let centre = [
        value(session, &coordinates[0]),
        value(session, &coordinates[1]),
    ];
    let ranges = [0, 1].map(|axis| {
        let along = path.iter().map(|p| p[axis]).chain([centre[axis]]);
        let (lo, hi) = along.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        // Wide enough to show the bowl around the weights: at least ±1, or the path and a
        // quarter more.
        let pad = ((hi - lo) * 0.25).max(1.0);
        (lo - pad, hi + pad)
    });
    let axis = |(lo, hi): (f64, f64)| -> Vec<f64> {
        (0..STEPS)
            .map(|i| lo + (hi - lo) * i as f64 / (STEPS - 1) as f64)
            .collect()
    };
    let (xs, ys) = (axis(ranges[0]), axis(ranges[1]));
    let kept = [0, 1].map(|i| session.params[coordinates[i].param].data[coordinates[i].index]);
    let batch = (session.model.train.batch as usize).clamp(1, subset.len.max(1));
    let mut losses = vec![vec![0.0; STEPS]; STEPS];
    for (j, &y) in ys.iter().enumerate() {
        for (i, &x) in xs.iter().enumerate() {
            session.params[coordinates[0].param].data[coordinates[0].index] = x as f32;
            session.params[coordinates[1].param].data[coordinates[1].index] = y as f32;
            losses[j][i] = session.evaluate(&subset, batch).loss;
        }
    }
    for i in 0..2 {
        session.params[coordinates[i].param].data[coordinates[i].index] = kept[i];
    }
    if losses.iter().flatten().any(|l| !l.is_finite()) {
        return Err(Diagnostic::plain(
            Code::E0509,
            "the loss is not finite somewhere on the grid: the surface cannot be drawn",
        ));
    }
    let landscape = Landscape {
        title,
        labels: [&coordinates[0].label, &coordinates[1].label],
        xs,
        ys,
        losses,
        path,
        examples: (!subset.is_nothing()).then_some(subset.len),
    };
    let bytes = render((format, Effort::Small), SIZE, &landscape)?;
    save(out, &bytes)
}

/// The loss on a grid, and a path across it.
struct Landscape<'a> {
    title: &'a str,
    labels: [&'a str; 2],
    xs: Vec<f64>,
    ys: Vec<f64>,
    /// `losses[j][i]` is the loss at (`xs[i]`, `ys[j]`).
    losses: Vec<Vec<f64>>,
    path: &'a [[f64; 2]],
    /// The training examples the loss is computed on; none for an objective without data.
    examples: Option<usize>,
}

impl Landscape<'_> {
    fn range(&self) -> (f64, f64) {
        let all = self.losses.iter().flatten();
        all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
    }

    /// 0 to 1 for the colour scale, on a square-root scale so the valley floor shows.
    fn level(&self, loss: f64) -> f64 {
        let (lo, hi) = self.range();
        ((loss - lo) / (hi - lo).max(f64::MIN_POSITIVE))
            .clamp(0.0, 1.0)
            .sqrt()
    }

    /// The loss at a point of the grid's cell `(i, j)`, for contour lines.
    fn at(&self, i: usize, j: usize) -> f64 {
        self.losses[j][i]
    }
}

/// Viridis, from dark blue (low) to yellow (high).
fn colour(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let k = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - k as f64;
    let (a, b) = (STOPS[k], STOPS[k + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

impl Picture for Landscape<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let body = super::canvas(root, self.title)?;
        let (left, right) = body.split_horizontally(body.dim_in_pixel().0 / 2);
        let (x0, x1) = (self.xs[0], self.xs[STEPS - 1]);
        let (y0, y1) = (self.ys[0], self.ys[STEPS - 1]);
        let (lo, hi) = self.range();
        let over = match self.examples {
            Some(n) => format!("loss on {n} training examples"),
            None => "the objective".to_string(),
        };
        let caption = format!("{over} (x: {}, z: {})", self.labels[0], self.labels[1]);

        let mut chart = ChartBuilder::on(&left)
            .caption(&caption, ("sans-serif", 14))
            .margin(16)
            .build_cartesian_3d(x0..x1, lo..hi, y0..y1)
            .map_err(err)?;
        chart.with_projection(|mut p| {
            p.yaw = 0.7;
            p.pitch = 0.35;
            p.scale = 0.8;
            p.into_matrix()
        });
        chart
            .configure_axes()
            .label_style(("sans-serif", 11))
            .light_grid_style(BLACK.mix(0.1))
            .max_light_lines(3)
            .draw()
            .map_err(err)?;
        let index = |v: f64, from: f64, to: f64| {
            (((v - from) / (to - from)) * (STEPS - 1) as f64).round() as usize
        };
        let loss_at = |x: f64, y: f64| {
            self.at(
                index(x, x0, x1).min(STEPS - 1),
                index(y, y0, y1).min(STEPS - 1),
            )
        };
        chart
            .draw_series(
                SurfaceSeries::xoz(self.xs.iter().copied(), self.ys.iter().copied(), loss_at)
                    .style_func(&|&v| colour(self.level(v)).mix(0.9).filled()),
            )
            .map_err(err)?;
        if !self.path.is_empty() {
            let line: Vec<(f64, f64, f64)> = (self.path.iter())
                .map(|p| (p[0], loss_at(p[0].clamp(x0, x1), p[1].clamp(y0, y1)), p[1]))
                .collect();
            chart
                .draw_series(LineSeries::new(line, RGBColor(220, 30, 30).stroke_width(2)))
                .map_err(err)?;
        }

        let mut map = ChartBuilder::on(&right)
            .caption("contours and the optimizer's path", ("sans-serif", 14))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        map.configure_mesh()
            .x_desc(self.labels[0])
            .y_desc(self.labels[1])
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 14))
            .disable_mesh()
            .draw()
            .map_err(err)?;
        let (dx, dy) = (
            (x1 - x0) / (STEPS - 1) as f64,
            (y1 - y0) / (STEPS - 1) as f64,
        );
        map.draw_series((0..STEPS).flat_map(|j| {
            (0..STEPS).map(move |i| {
                let (x, y) = (self.xs[i], self.ys[j]);
                let corners = [(x - dx / 2.0, y - dy / 2.0), (x + dx / 2.0, y + dy / 2.0)];
                Rectangle::new(corners, colour(self.level(self.at(i, j))).filled())
            })
        }))
        .map_err(err)?;
        for k in 1..10 {
            // Levels evenly spaced on the colour scale.
            let t = k as f64 / 10.0;
            let level = lo + (hi - lo) * t * t;
            for segment in contour(self, level) {
                map.draw_series(LineSeries::new(segment, WHITE.mix(0.7).stroke_width(1)))
                    .map_err(err)?;
            }
        }
        if let (Some(first), Some(last)) = (self.path.first(), self.path.last()) {
            let red = RGBColor(220, 30, 30);
            let points = self.path.iter().map(|p| (p[0], p[1]));
            map.draw_series(LineSeries::new(points, red.stroke_width(2)))
                .map_err(err)?
                .label("optimizer's path")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2))
                });
            map.draw_series([Circle::new((first[0], first[1]), 5, WHITE.filled())])
                .map_err(err)?
                .label("start")
                .legend(|(x, y)| Circle::new((x + 10, y), 5, WHITE.filled()));
            map.draw_series([Circle::new((last[0], last[1]), 5, red.filled())])
                .map_err(err)?
                .label("end")
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, red.filled()));
            super::legend(&mut map, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    }
}

/// The segments where the loss crosses `level`, by marching squares over the grid's cells.
fn contour(land: &Landscape, level: f64) -> Vec<Vec<(f64, f64)>> {
    let mut segments = Vec::new();
    for j in 0..STEPS - 1 {
        for i in 0..STEPS - 1 {
            // Corners counter-clockwise from (i, j), and the edges between them.
            let corners = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)];
            let value = |(a, b): (usize, usize)| land.at(a, b);
            let point = |(a, b): (usize, usize)| (land.xs[a], land.ys[b]);
            let mut crossings = Vec::new();
            for e in 0..4 {
                let (p, q) = (corners[e], corners[(e + 1) % 4]);
                let (vp, vq) = (value(p), value(q));
                if (vp < level) != (vq < level) {
                    let t = (level - vp) / (vq - vp);
                    let (pp, pq) = (point(p), point(q));
                    crossings.push((pp.0 + (pq.0 - pp.0) * t, pp.1 + (pq.1 - pp.1) * t));
                }
            }
            // Two crossings are one segment; four (a saddle) are two.
            for pair in crossings.chunks_exact(2) {
                segments.push(pair.to_vec());
            }
        }
    }
    segments
}
