//! The commands that load data and run models: `run`, `eval`, `predict`, `bench` and
//! `gradcheck`.

use super::{Backend, DataArgs};
use crate::check::model::{LabelKind, Model};
use crate::codegen::{CompileError, Pool};
use crate::data::{Source, Split};
use crate::diagnostics::{Code, Diagnostic};
use crate::ir;
use crate::plot::animate::Animation;
use crate::runtime::{self, checkpoint, Every, Reporter, RunSettings, Session, Stop};
use crate::source::SourceFile;
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// A session holding saved weights, and the data to use them on (checked to fit).
pub(super) fn restored<'a>(
    source: &'a SourceFile,
    model: &'a Model,
    weights: &Path,
    data: &DataArgs,
) -> Result<(Session<'a>, Split), Diagnostic> {
    let mut session = Session::new(model, source, 0)?;
    let checkpoint = session.restore(weights)?;
    let split = load(data, checkpoint.seed)?;
    runtime::fits(model, &split.test)?;
    // `eval` takes the model's batches and `predict` batches of 256; the interpreter gives the
    // same figures, only more slowly, when the model does not compile.
    let batch = (model.train.batch as usize).max(PREDICT_BATCH);
    match session.compile(batch, false) {
        Ok(_) | Err(CompileError::TooLarge { .. } | CompileError::NoTarget(_)) => {}
        Err(why) => return Err(compile_diagnostic(why, batch)),
    }
    Ok((session, split))
}

/// The batch `predict` runs the evaluation step on.
const PREDICT_BATCH: usize = 256;

pub(super) fn load(args: &DataArgs, seed: u64) -> Result<Split, Diagnostic> {
    source_of(args)?.load(seed)
}

fn source_of(args: &DataArgs) -> Result<Source, Diagnostic> {
    Source::parse(&args.data, args.data_dir.as_deref(), args.target.as_deref())
}

/// How `netc run` runs, beyond the training settings.
pub(super) struct RunOptions {
    pub(super) model_path: PathBuf,
    pub(super) seed_given: bool,
    pub(super) backend: Backend,
    pub(super) profile: bool,
    pub(super) log: Option<PathBuf>,
    pub(super) plot: Option<PathBuf>,
    pub(super) tensorboard: Option<PathBuf>,
    /// The animation's path, and a frame every N steps rather than every epoch.
    pub(super) animate: Option<(PathBuf, Option<u64>)>,
    pub(super) trace: Option<PathBuf>,
    pub(super) save: Option<PathBuf>,
    pub(super) save_every: Option<Every>,
    pub(super) resume: Option<PathBuf>,
    /// The processes of a data-parallel run (`mpirun`), when there are several.
    pub(super) group: Option<Box<dyn runtime::Group>>,
}

/// Trains a model: every file the run will write is checked before anything else happens,
/// and the checkpoint is saved however training ends (finished, interrupted or diverged).
pub(super) fn train(
    source: &SourceFile,
    model: &Model,
    data: &DataArgs,
    mut settings: RunSettings,
    options: RunOptions,
) -> Result<Stop, Diagnostic> {
    let RunOptions {
        model_path,
        seed_given,
        backend,
        profile,
        log,
        plot,
        tensorboard,
        animate,
        trace,
        save,
        save_every,
        resume,
        group,
    } = options;
    // Only the first process of a data-parallel run prints, logs, draws and saves.
    let leads = group.as_ref().is_none_or(|g| g.rank() == 0);
    let [log, plot, tensorboard, trace, save] =
        [log, plot, tensorboard, trace, save].map(|path| path.filter(|_| leads));
    let (animate, save_every) = (animate.filter(|_| leads), save_every.filter(|_| leads));
    let note = |message: String| {
        if leads {
            eprintln!("{message}");
        }
    };
    let data_source = source_of(data)?;
    let mut inputs = vec![(model_path, "the model file")];
    inputs.extend(data_source.files().into_iter().map(|f| (f, "a data file")));
    if let Some(path) = &resume {
        // A checkpoint may be replaced by its continuation; nothing else the run reads may be.
        if !save.as_deref().is_some_and(|save| same_file(save, path)) {
            inputs.push((path.clone(), "the checkpoint given to --resume"));
        }
    }
    // Every output is checked without touching what is there: a run that fails before it
    // trains leaves an earlier log, picture, trace or checkpoint as it was.
    if let Some(path) = &plot {
        crate::plot::Format::of(path, "--plot")?;
    }
    for (path, flag, what) in [
        (&log, "--log", "the log"),
        (&plot, "--plot", "the picture"),
        (
            &animate.as_ref().map(|a| a.0.clone()),
            "--animate",
            "the animation",
        ),
        (&trace, "--trace", "the trace"),
        (&save, "--save", "the checkpoint"),
    ] {
        if let Some(path) = path {
            refuse_inputs(path, flag, &inputs)?;
            checkpoint::probe(path).map_err(|e| cannot_write(what, path, &e))?;
        }
    }
    settings.checkpoints = match (save_every, &save) {
        (Some(every), Some(path)) => Some((path.clone(), every)),
        (Some(_), None) => {
            return Err(Diagnostic::plain(
                Code::E0512,
                "--save-every needs --save PATH: where to write the checkpoints",
            ))
        }
        _ => None,
    };
    let mut session = Session::new(model, source, settings.seed)?;
    if let Some(path) = &resume {
        let checkpoint = session.restore(path)?;
        // Everything drawn from the seed (shuffling, dropout, a CSV split, a synthetic set)
        // continues from the checkpoint's, unless another is asked for.
        if !seed_given {
            settings.seed = checkpoint.seed;
        }
        note(format!(
            "resuming {} after epoch {} (step {})",
            path.display(),
            checkpoint.epoch,
            checkpoint.step
        ));
    }
    let split = data_source.load(settings.seed)?;
    // A batch larger than the data is the whole data set, and needs no larger buffers.
    settings.batch = settings
        .batch
        .min(split.train.len.max(split.test.len).max(1));
    if session.epoch >= settings.epochs {
        note(format!(
            "note: nothing to train: {} epochs asked for, and {} done",
            settings.epochs, session.epoch
        ));
    }
    if let Some(group) = group {
        distribute(&mut session, group, &split, &settings)?;
    }
    if backend != Backend::Interp {
        match session.compile(settings.batch, profile) {
            Ok(took) => note(format!(
                "compiled the training and evaluation steps in {:.1} ms",
                took.as_secs_f64() * 1e3
            )),
            // A bug is reported as one; only what the JIT cannot serve falls back.
            Err(why @ (CompileError::TooLarge { .. } | CompileError::NoTarget(_)))
                if backend == Backend::Auto =>
            {
                note(format!("note: running on the interpreter: {why}"))
            }
            Err(why) => return Err(compile_diagnostic(why, settings.batch)),
        }
    }
    let title = run_title(source, model, &settings);
    let mut watchers: Vec<Box<dyn runtime::Watcher>> = Vec::new();
    // The one watcher that can refuse the model comes first, before any file is made.
    if let Some((path, every)) = animate {
        let batch = settings.batch;
        let (title, train) = (title.clone(), &split.train);
        let animation = Animation::new(path, title, (&session, batch), train, every)?;
        watchers.push(Box::new(animation));
    }
    if let Some(path) = plot {
        watchers.push(Box::new(crate::plot::LiveCurves::new(path, title)));
    }
    if let Some(dir) = &tensorboard {
        watchers.push(Box::new(crate::plot::tensorboard::EventFile::create(dir)?));
    }
    if let Some(path) = trace {
        watchers.push(Box::new(crate::plot::trace::Trace::create(path, &session)?));
    }
    let log_file = match &log {
        Some(path) => {
            Some(std::fs::File::create(path).map_err(|e| cannot_write("the log", path, &e))?)
        }
        None => None,
    };
    let mut reporter = Reporter::new(log_file, !leads);
    reporter.scheduled = model.schedule != crate::check::model::Schedule::CONSTANT;
    reporter.watchers = watchers;
    let outcome = session.fit(&split, &settings, &mut reporter);
    reporter.finish();
    if let Some(parallel) = session.parallel.as_ref().filter(|_| leads) {
        print_parallel(parallel);
    }
    if profile && leads {
        match session.profile() {
            Some(profile) => print_profile(&profile),
            None => eprintln!("note: --profile times compiled code; this run used the interpreter"),
        }
    }
    // The last good weights are saved however training stopped.
    if let Some(path) = &save {
        session.save(path, settings.seed)?;
        eprintln!(
            "saved {} (epoch {}, step {})",
            path.display(),
            session.epoch,
            session.step
        );
    }
    if let Ok(Stop::Interrupted) = outcome {
        note(format!(
            "interrupted after step {} ({} epochs and {} steps done); {}",
            session.step,
            session.epoch,
            session.epoch_step,
            match &save {
                Some(path) => format!("resume with `--resume {}`", path.display()),
                None => "nothing was saved (no --save)".to_string(),
            }
        ));
    }
    if let (Some(e), Some(path)) = (&reporter.log_error, &log) {
        return Err(cannot_write("the log", path, e));
    }
    // A failed step is the first thing to report; a picture that could not be drawn, next.
    outcome.and_then(|stop| reporter.watch_error.take().map_or(Ok(stop), Err))
}

/// Makes a session data-parallel over `group`, once every process is found to train the same
/// checked model on the same data from the same point with the same settings (E0515), and
/// the batch has a row for each (E0502).
fn distribute(
    session: &mut Session,
    mut group: Box<dyn runtime::Group>,
    split: &Split,
    settings: &RunSettings,
) -> Result<(), Diagnostic> {
    let position = [session.step, session.epoch, session.epoch_step];
    let RunSettings {
        epochs,
        batch,
        lr,
        seed,
        shuffle,
        // Only the first process saves.
        checkpoints: _,
    } = settings;
    let run = format!("{position:?} {epochs} {batch} {lr} {seed} {shuffle}");
    let data = [&split.train, &split.test].map(crate::runtime::data_fingerprint);
    let same = crate::runtime::fingerprint([
        session.hash.as_bytes(),
        run.as_bytes(),
        &data[0].to_le_bytes(),
        &data[1].to_le_bytes(),
    ]);
    let what = "checked model, data, starting checkpoint or settings";
    runtime::Parallel::agree(&mut *group, same, what)?;
    if settings.batch < group.size() {
        return Err(Diagnostic::plain(
            Code::E0502,
            format!(
                "a batch of {} examples cannot be shared by {} processes",
                settings.batch,
                group.size()
            ),
        )
        .with_help(
            "use a batch of at least one example per process (`--batch`), or fewer processes",
        ));
    }
    session.distribute(group);
    Ok(())
}

/// A data-parallel run's time per step, split into computing and summing across processes.
fn print_parallel(parallel: &runtime::Parallel) {
    let t = parallel.timing;
    let steps = t.steps.max(1) as f64;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps;
    let buckets = match t.buckets {
        1 => "1 bucket".to_string(),
        n => format!("{n} buckets"),
    };
    eprintln!(
        "data-parallel over {} processes, per step: computing {:.3} ms, summing {:.3} ms in {buckets} ({:.3} ms of it after the gradients), {:.1} KiB sent by each ({} steps)",
        parallel.size(),
        ms(t.compute),
        ms(t.communicate),
        ms(t.waiting),
        t.bytes as f64 / steps / 1024.0,
        t.steps
    );
}

/// What `netc surface` draws and where.
pub(super) struct SurfaceRequest<'a> {
    pub(super) params: Option<&'a str>,
    pub(super) weights: Option<&'a Path>,
    pub(super) trace: Option<&'a Path>,
    pub(super) output: &'a Path,
}

/// The loss over two coordinates of the parameters, around saved or initial weights.
pub(super) fn surface(
    source: &SourceFile,
    model: &Model,
    data: &DataArgs,
    request: SurfaceRequest,
) -> Result<(), Diagnostic> {
    crate::plot::Format::of(request.output, "-o")?;
    let coordinates = crate::plot::surface::coordinates(model, request.params)?;
    let (mut session, split) = match request.weights {
        Some(weights) => restored(source, model, weights, data)?,
        None => {
            let split = load(data, model.train.seed)?;
            runtime::fits(model, &split.train)?;
            (Session::new(model, source, model.train.seed)?, split)
        }
    };
    let path = match request.trace {
        Some(trace) => {
            let names = coordinates
                .each_ref()
                .map(|c| model.params[c.param].name.as_str());
            crate::plot::trace::read(trace, &coordinates, names)?
        }
        None => Vec::new(),
    };
    let batch = (model.train.batch as usize).clamp(1, crate::plot::surface::MAX_EXAMPLES);
    // The interpreter draws the surface too, only more slowly; a bug is reported as one.
    match session.compile(batch, false) {
        Ok(_) | Err(CompileError::TooLarge { .. } | CompileError::NoTarget(_)) => {}
        Err(why) => return Err(compile_diagnostic(why, batch)),
    }
    let name = Path::new(&source.name)
        .file_name()
        .map_or(source.name.clone(), |n| n.to_string_lossy().into_owned());
    let at = match request.weights {
        Some(w) => format!("around {}", w.display()),
        None => "around the initial weights".to_string(),
    };
    let title = format!(
        "{name}: the loss over {} and {}, {at}",
        coordinates[0].label, coordinates[1].label
    );
    crate::plot::surface::surface(
        &mut session,
        &split.train,
        &coordinates,
        &path,
        request.output,
        &title,
    )
}

/// The title of a run's pictures: the model's name and its training settings.
fn run_title(source: &SourceFile, model: &Model, settings: &RunSettings) -> String {
    let name = Path::new(&source.name)
        .file_name()
        .map_or(source.name.clone(), |n| n.to_string_lossy().into_owned());
    let optimizer = match model.optimizer.rule {
        crate::check::model::Rule::Sgd { momentum, .. } if momentum > 0.0 => "sgd, momentum",
        _ => model.optimizer.name(),
    };
    let schedule = match model.schedule.kind {
        crate::check::model::ScheduleKind::Constant => String::new(),
        _ => format!(" ({})", model.schedule.name()),
    };
    format!(
        "{name}: {optimizer}, lr {}{schedule}, batch {}, seed {}",
        settings.lr, settings.batch, settings.seed
    )
}

/// The shown examples' inputs and the model's outputs, as tensors `input` and `output` of a
/// safetensors file: what another runtime given the same inputs must reproduce.
fn save_outputs(
    session: &Session,
    subset: &crate::data::Dataset,
    predictions: &[(f64, Option<Tensor<f32>>)],
    path: &Path,
) -> Result<(), Diagnostic> {
    let no_output = || {
        Diagnostic::plain(
            Code::E0512,
            format!(
                "--outputs {}: the model has no input or output to write",
                path.display()
            ),
        )
        .with_note("a model without inputs is an objective over its parameters, not a network")
    };
    if session.model.inputs.is_empty() {
        return Err(no_output());
    }
    let rows: Vec<usize> = (0..subset.len).collect();
    let mut inputs = Vec::new();
    let graph = &session.eval.graph;
    runtime::batch_tensors(&graph.inputs, subset, &rows, &mut inputs, &session.pool);
    let mut output = Tensor::scalar(0.0);
    for (i, (_, batch)) in predictions.iter().enumerate() {
        let batch = batch.as_ref().ok_or_else(no_output)?;
        if i == 0 {
            output.dims = batch.dims.clone();
            output.data.clear();
        } else {
            output.dims[0] += batch.dims[0];
        }
        output.data.extend_from_slice(&batch.data);
    }
    let tensors = [
        ("input".to_string(), &inputs[0]),
        ("output".to_string(), &output),
    ];
    let encoded = checkpoint::encode(&tensors, None)
        .map_err(|e| Diagnostic::plain(Code::E0512, format!("cannot encode the outputs: {e}")))?;
    checkpoint::write_atomically(path, &encoded).map_err(|e| {
        Diagnostic::plain(Code::E0512, format!("cannot write {}: {e}", path.display()))
    })
}

/// Writes the ONNX model of a trained model's evaluation graph to `path`.
pub(super) fn export_onnx(
    source: &SourceFile,
    model: &Model,
    weights: &Path,
    path: &Path,
    opset: u32,
    batch: crate::export::Batch,
) -> Result<(), Diagnostic> {
    let mut session = Session::new(model, source, 0)?;
    session.restore(weights)?;
    let output = model.output.and_then(|i| model.values[i].name.clone());
    let options = crate::export::Options {
        opset,
        batch,
        output: output.unwrap_or_else(|| "output".into()),
        source: source.name.clone(),
    };
    let bytes = crate::export::export(
        &session.eval.graph,
        &session.params,
        &session.states,
        &options,
    )?;
    checkpoint::write_atomically(path, &bytes).map_err(|e| {
        Diagnostic::plain(Code::E0512, format!("cannot write {}: {e}", path.display()))
            .with_note("nothing was written; a file already there is as it was")
    })?;
    let batch = match batch {
        crate::export::Batch::Dynamic => "any batch (N)".to_string(),
        crate::export::Batch::Fixed(n) => format!("batch {n}"),
    };
    let inputs: Vec<&str> = model.inputs.iter().map(|i| i.name.as_str()).collect();
    say!(
        "wrote {} (ONNX opset {opset}, {batch}): {} -> {}",
        path.display(),
        inputs.join(", "),
        options.output
    );
    Ok(())
}

/// Why the JIT did not compile a model, as a diagnostic.
pub(super) fn compile_diagnostic(why: CompileError, batch: usize) -> Diagnostic {
    match why {
        CompileError::TooLarge { .. } => Diagnostic::plain(
            Code::E0510,
            format!("the JIT cannot compile this model for batches of {batch}: {why}"),
        )
        .with_help("use a smaller `--batch`, or smaller layers"),
        CompileError::NoTarget(_) => Diagnostic::plain(
            Code::E0510,
            format!("the JIT cannot compile this model: {why}"),
        )
        .with_help("run it with `--backend interp`"),
        CompileError::Internal(_) => Diagnostic::plain(Code::E0510, why.to_string())
            .with_note("this is a bug in netc; please report it with the model file"),
    }
}

/// Refuses an output path that is one of the run's inputs.
fn refuse_inputs(path: &Path, flag: &str, inputs: &[(PathBuf, &str)]) -> Result<(), Diagnostic> {
    for (input, what) in inputs {
        if same_file(path, input) {
            return Err(Diagnostic::plain(
                Code::E0512,
                format!("`{flag} {}` would overwrite {what}", path.display()),
            )
            .with_help("write to another path"));
        }
    }
    Ok(())
}

/// True when both paths exist and are the same file (by device and inode, through links).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn cannot_write(what: &str, path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::plain(
        Code::E0512,
        format!("cannot write {what} {}: {e}", path.display()),
    )
}

/// Times the compiled training step: compile time, the median of `steps` single steps, one
/// whole epoch, the matrix products' GFLOP/s over that epoch, and the process's peak memory.
pub(super) fn bench(
    source: &SourceFile,
    model: &Model,
    data: &DataArgs,
    timed_steps: usize,
) -> Result<(), Diagnostic> {
    let split = load(data, model.train.seed)?;
    runtime::fits(model, &split.train)?;
    let batch = (model.train.batch as usize).min(split.train.len);
    let mut session = Session::new(model, source, model.train.seed)?;
    let compile = session
        .compile(batch, false)
        .map_err(|why| compile_diagnostic(why, batch))?;
    let lr = model.optimizer.lr;
    let settings = |epochs| RunSettings {
        epochs,
        batch,
        lr,
        seed: model.train.seed,
        shuffle: true,
        checkpoints: None,
    };
    // Single steps: train on one batch at a time and keep each step's time.
    let one_batch = crate::data::Split {
        train: split.train.head(batch),
        test: split.test.head(1),
        class_names: None,
    };
    let mut times = Vec::with_capacity(timed_steps);
    for epoch in 1..=timed_steps as u64 {
        let started = std::time::Instant::now();
        session.fit(&one_batch, &settings(epoch), &mut Reporter::new(None, true))?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    // The same steps on one worker, which must give the same bits.
    let mut alone = Session::new(model, source, model.train.seed)?;
    alone.pool = Pool::new(1);
    alone
        .compile(batch, false)
        .map_err(|why| compile_diagnostic(why, batch))?;
    alone.fit(
        &one_batch,
        &settings(timed_steps as u64),
        &mut Reporter::new(None, true),
    )?;
    let bits = |s: &Session| -> Vec<u32> {
        (s.params.iter().chain(&s.states))
            .flat_map(|t| t.data.iter().map(|v| v.to_bits()))
            .collect()
    };
    if bits(&alone) != bits(&session) {
        return Err(Diagnostic::plain(
            Code::E0510,
            format!(
                "{timed_steps} steps on {} workers and on one gave other bits: a bug in netc",
                session.pool.threads()
            ),
        ));
    }
    // One whole epoch, as `netc run` trains it (test evaluation excluded).
    let train_len = split.train.len;
    let epoch_data = crate::data::Split {
        train: split.train,
        test: split.test.head(1),
        class_names: None,
    };
    // Profiled, to find the time the convolutions take; the ticks cost about a microsecond
    // per kernel.
    let mut fresh = Session::new(model, source, model.train.seed)?;
    fresh
        .compile(batch, true)
        .map_err(|why| compile_diagnostic(why, batch))?;
    let started = std::time::Instant::now();
    fresh.fit(&epoch_data, &settings(1), &mut Reporter::new(None, true))?;
    let epoch = started.elapsed().as_secs_f64();
    let conv_seconds: f64 = fresh.profile().map_or(0.0, |p| {
        p.kernels
            .iter()
            .filter(|(what, _)| what.starts_with("conv "))
            .map(|(_, seconds)| seconds)
            .sum()
    });
    let per_step = |rows| fresh.step_flops(rows).unwrap_or_default();
    let (full, rest) = (per_step(batch), per_step(train_len % batch));
    let steps = (train_len / batch) as f64;
    let matmul = full.matmul * steps + rest.matmul;
    let conv = full.conv * steps + rest.conv;
    let threads = session.pool.threads();
    say!(
        "model        {} ({train_len} examples, batch {batch}, {threads} threads)",
        model.name
    );
    say!(
        "compile      {:.1} ms (training and evaluation steps)",
        compile.as_secs_f64() * 1e3
    );
    say!(
        "step         {:.3} ms median of {timed_steps}",
        median * 1e3
    );
    say!("epoch        {epoch:.3} s");
    say!(
        "matmul       {:.1} GFLOP per epoch in all products, {:.1} GFLOP/s over the epoch",
        (matmul + conv) / 1e9,
        (matmul + conv) / epoch / 1e9
    );
    if conv > 0.0 {
        say!(
            "conv         {:.1} GFLOP per epoch in {conv_seconds:.3} s of convolution kernels (im2col included), {:.1} GFLOP/s",
            conv / 1e9,
            conv / conv_seconds.max(1e-9) / 1e9
        );
    }
    let pieces = fresh.pool.pieces_run();
    say!(
        "workers      {threads}, pieces run by each over the epoch: {}",
        pieces
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (contended, windows) = fresh.pool.contention();
    if windows > 0 {
        say!(
            "cores        {}: a worker waited for a core a quarter of the time or more in {contended} of {windows} windows of 20 ms",
            if contended > 0 {
                "shared with other programs (figures below a quiet machine's)"
            } else {
                "not contended"
            }
        );
    }
    say!("bits         the same after {timed_steps} steps on {threads} workers and on one");
    match peak_memory_kib() {
        Some(kib) => say!("peak memory  {:.0} MB", kib as f64 / 1024.0),
        None => say!("peak memory  unknown (no /proc/self/status)"),
    }
    Ok(())
}

/// The process's peak resident memory, from Linux's /proc.
pub(super) fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernels that took longest, with their share of the training step.
pub(super) fn print_profile(profile: &crate::codegen::Profile) {
    let total: f64 = profile.kernels.iter().map(|(_, t)| t).sum();
    let mut kernels: Vec<(usize, &(String, f64))> = profile.kernels.iter().enumerate().collect();
    kernels.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    say!(
        "profile: {:.3} s in {} kernels of the training step",
        total,
        profile.kernels.len()
    );
    say!("{:>6} {:>9} {:>6}  kernel", "#", "seconds", "share");
    for (k, (what, seconds)) in kernels.iter().take(15) {
        say!(
            "{k:>6} {seconds:>9.4} {:>5.1}%  {what}",
            100.0 * seconds / total.max(1e-12)
        );
    }
}

/// Prints predicted against true labels for the first `limit` test examples, and with `grid`
/// draws them as labelled images.
pub(super) fn print_predictions(
    session: &mut Session,
    split: &Split,
    limit: usize,
    grid: Option<&Path>,
    outputs: Option<&Path>,
) -> Result<(), Diagnostic> {
    let test = &split.test;
    let shown = limit.min(test.len);
    let subset = test.head(shown);
    let image_width = match (grid, subset.feature_dims.as_slice()) {
        (None, _) => None,
        (Some(_), [.., h, w]) if *h > 1 && *w > 1 => Some(*w),
        (Some(path), dims) => {
            return Err(Diagnostic::plain(
                Code::E0512,
                format!(
                    "--grid {} draws images, and {}'s examples are {dims:?}",
                    path.display(),
                    test.origin
                ),
            ))
        }
    };
    let name = |class: usize| match &split.class_names {
        Some(names) => names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string()),
        None => class.to_string(),
    };
    let classes = matches!(
        session.model.label.as_ref().map(|l| &l.kind),
        Some(LabelKind::Class(_))
    );
    say!("{:>5}  {:<14} true", "index", "predicted");
    let mut labelled = Vec::new();
    let mut row = 0;
    let predictions = session.predict(&subset, PREDICT_BATCH);
    if let Some(path) = outputs {
        save_outputs(session, &subset, &predictions, path)?;
    }
    for (_, output) in predictions {
        let Some(output) = output else { break };
        let per = output.data.len() / output.dims[0].max(1);
        for values in output.data.chunks(per) {
            let truth = subset.targets[row * subset.target_size()];
            let (predicted, actual) = if classes {
                let best = values
                    .iter()
                    .enumerate()
                    .fold(0, |b, (i, &v)| if v > values[b] { i } else { b });
                (name(best), name(truth as usize))
            } else {
                (format!("{:.4}", values[0]), format!("{truth:.4}"))
            };
            let mark = if classes && predicted != actual {
                "  ✗"
            } else {
                ""
            };
            say!(
                "{}",
                format!("{row:>5}  {predicted:<14} {actual:<14}{mark}").trim_end()
            );
            if let Some(width) = image_width {
                let mut pixels = vec![0.0; subset.feature_size()];
                subset
                    .features
                    .copy_to(row * subset.feature_size(), &mut pixels);
                labelled.push(crate::plot::Labelled {
                    pixels,
                    width,
                    predicted,
                    actual,
                });
            }
            row += 1;
        }
    }
    match grid {
        Some(path) => {
            let wrong = labelled.iter().filter(|l| l.predicted != l.actual).count();
            let title = format!(
                "{}: {} of {} test images predicted wrongly",
                session.model.name,
                wrong,
                labelled.len()
            );
            crate::plot::image_grid(path, &labelled, &title)
        }
        None => Ok(()),
    }
}

pub(super) fn gradcheck(
    source: &SourceFile,
    model: &Model,
    data: Option<&str>,
    data_dir: Option<PathBuf>,
    target: Option<String>,
    batch: usize,
) -> Result<bool, Diagnostic> {
    let forward = ir::build(model, source, ir::Mode::Train);
    let loss = forward.result("loss").expect("graphs have a loss");
    // The check holds the forward values in f64, and as many again for the gradients.
    let peak = crate::interp::peak_elements(&forward, &[loss], batch);
    crate::memory::ensure(
        peak.and_then(|n| crate::memory::bytes(n, 8 * 2)),
        &format!("the gradient check's values for a batch of {batch}"),
    )?;
    let mut classes = vec![None; model.inputs.len()];
    if let Some(label) = &model.label {
        classes.push(match label.kind {
            LabelKind::Class(n) => Some(n),
            LabelKind::Target(_) => None,
        });
    }
    let [mut inputs, params, states] =
        crate::gradcheck::random_bindings(&forward, batch, &classes, model.train.seed);
    let session = Session::new(model, source, model.train.seed)?;
    // Start from the model's own initialization, nudged off zero so no unit sits on a kink.
    let params: Vec<_> = session
        .params
        .iter()
        .zip(params)
        .map(|(init, noise)| {
            Tensor::new(
                init.dims.clone(),
                init.data
                    .iter()
                    .zip(&noise.data)
                    .map(|(&w, n)| w as f64 + 0.01 * n)
                    .collect(),
            )
        })
        .collect();
    let mut batch = batch;
    if let Some(name) = data {
        let split =
            Source::parse(name, data_dir.as_deref(), target.as_deref())?.load(model.train.seed)?;
        runtime::fits(model, &split.train)?;
        batch = batch.min(split.train.len);
        let rows: Vec<usize> = (0..batch).collect();
        let mut tensors = Vec::new();
        runtime::batch_tensors(
            &forward.inputs,
            &split.train,
            &rows,
            &mut tensors,
            &Pool::new(1),
        );
        inputs = tensors.iter().map(Tensor::cast).collect();
    }
    let problem = crate::gradcheck::Problem {
        forward: &forward,
        batch,
        inputs,
        params,
        states,
        seed: model.train.seed,
    };
    let results = crate::gradcheck::check(&problem, 20);
    say!("{:<28} {:>10} {:>12}", "parameter", "checked", "rel. error");
    for r in &results {
        say!("{:<28} {:>10} {:>12.2e}", r.name, r.checked, r.error);
    }
    let worst = results.iter().max_by(|a, b| a.error.total_cmp(&b.error));
    match worst {
        Some(w) if w.error >= 1e-5 => {
            say!(
                "FAILED: the gradient of {} is off by {:.2e} (the bound is 1e-5)",
                w.name,
                w.error
            );
            Ok(false)
        }
        Some(w) => {
            say!("worst: {} at {:.2e} (below 1e-5)", w.name, w.error);
            Ok(true)
        }
        None => {
            say!("the model has no parameters");
            Ok(true)
        }
    }
}
