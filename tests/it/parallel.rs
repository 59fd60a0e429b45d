//! Data-parallel training without MPI: P sessions on P threads, summing through an in-process
//! group, train as one session does. This is the runtime's half of what `tests/it/mpi.rs`
//! checks over MPI (with `--features mpi`): shares, weights, buckets, running statistics, a
//! share of no rows, and the metrics summed over processes.

use crate::load;
use netc::data::{Source, Split};
use netc::diagnostics::Code;
use netc::runtime::{Group, Parallel, Reporter, RunSettings, Session};
use netc::tensor::Tensor;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};

/// Processes as threads: each puts its part in its slot, and every one adds the slots in rank
/// order, as the MPI group's owner of each segment does.
struct Threads {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    barrier: Barrier,
    f32s: Mutex<Vec<Vec<f32>>>,
    f64s: Mutex<Vec<Vec<f64>>>,
    u64s: Mutex<Vec<u64>>,
}

fn threads(size: usize) -> Vec<Threads> {
    let shared = Arc::new(Shared {
        size,
        barrier: Barrier::new(size),
        f32s: Mutex::new(vec![Vec::new(); size]),
        f64s: Mutex::new(vec![Vec::new(); size]),
        u64s: Mutex::new(vec![0; size]),
    });
    (0..size)
        .map(|rank| Threads {
            rank,
            shared: Arc::clone(&shared),
        })
        .collect()
}

impl Group for Threads {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn sum(&mut self, local: &[f32], sum: &mut [f32]) {
        self.shared.f32s.lock().expect("unpoisoned")[self.rank] = local.to_vec();
        self.shared.barrier.wait();
        {
            let parts = self.shared.f32s.lock().expect("unpoisoned");
            for (i, s) in sum.iter_mut().enumerate() {
                *s = parts[0][i];
                for part in &parts[1..] {
                    *s += part[i];
                }
            }
        }
        self.shared.barrier.wait();
    }

    fn sum_f64(&mut self, values: &mut [f64]) {
        self.shared.f64s.lock().expect("unpoisoned")[self.rank] = values.to_vec();
        self.shared.barrier.wait();
        {
            let parts = self.shared.f64s.lock().expect("unpoisoned");
            for (i, v) in values.iter_mut().enumerate() {
                *v = parts.iter().map(|p| p[i]).sum();
            }
        }
        self.shared.barrier.wait();
    }

    fn gather(&mut self, value: u64) -> Vec<u64> {
        self.shared.u64s.lock().expect("unpoisoned")[self.rank] = value;
        self.shared.barrier.wait();
        let all = self.shared.u64s.lock().expect("unpoisoned").clone();
        self.shared.barrier.wait();
        all
    }

    fn bytes_sent(&self) -> u64 {
        0
    }
}

/// What a run ends with: the weights, the states and the last epoch's figures.
type Trained = (Vec<Tensor<f32>>, Vec<Tensor<f32>>, (f64, f64, Vec<f64>));

/// Trains `file` for `epochs` on `data`, alone (`processes` 0) or as each of `processes`
/// threads (with 1 and 2 workers in turn), compiled or on the interpreter; one result per
/// process.
fn train(
    file: &str,
    data: &Split,
    batch: usize,
    epochs: u64,
    processes: usize,
    compiled: bool,
) -> Vec<Trained> {
    let source = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(file));
    let model = netc::front_end(&source).0.expect("model checks").1;
    let settings = RunSettings {
        epochs,
        batch,
        lr: model.optimizer.lr,
        seed: 7,
        shuffle: true,
        checkpoints: None,
    };
    let run = |group: Option<Threads>| {
        let mut session = Session::new(&model, &source, settings.seed).expect("a session");
        if let Some(group) = group {
            // Processes on hosts with other numbers of cores: 1 and 2 workers in turn.
            session.pool = netc::codegen::Pool::new(1 + group.rank % 2);
            session.distribute(Box::new(group));
        }
        if compiled {
            session.compile(batch, false).expect("compiles");
        }
        let mut reporter = Reporter::new(None, true);
        session.fit(data, &settings, &mut reporter).expect("trains");
        let last = reporter.history.last().expect("an epoch").clone();
        let metrics = last.metrics.iter().filter_map(|m| m.test).collect();
        (
            session.params,
            session.states,
            (last.train_loss, last.test_loss, metrics),
        )
    };
    if processes == 0 {
        return vec![run(None)];
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = threads(processes)
            .into_iter()
            .map(|group| scope.spawn(|| run(Some(group))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("trains"))
            .collect()
    })
}

fn relative_difference(a: &[Tensor<f32>], b: &[Tensor<f32>]) -> f64 {
    let flat = |t: &[Tensor<f32>]| -> Vec<f32> { t.iter().flat_map(|t| t.data.clone()).collect() };
    let (a, b) = (flat(a), flat(b));
    let largest = a.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs())) as f64;
    worst / largest
}

fn bits(t: &[Tensor<f32>]) -> Vec<u32> {
    t.iter()
        .flat_map(|t| t.data.iter().map(|v| v.to_bits()))
        .collect()
}

/// Every process ends with the same bits, within rounding of one process's weights (the same
/// bits when there is one), and reports the same figures as one process (within rounding of
/// their sums).
fn like_one_process(one: &Trained, many: &[Trained], what: &str) {
    for other in &many[1..] {
        assert_eq!(
            bits(&many[0].0),
            bits(&other.0),
            "{what}: processes' weights differ"
        );
        assert_eq!(
            bits(&many[0].1),
            bits(&other.1),
            "{what}: processes' states differ"
        );
        assert_eq!(many[0].2, other.2, "{what}: processes report other figures");
    }
    // One process through the two halves is the whole step, bit for bit.
    if many.len() == 1 {
        assert_eq!(bits(&one.0), bits(&many[0].0), "{what}: weights differ");
        assert_eq!(bits(&one.1), bits(&many[0].1), "{what}: states differ");
    }
    let drift = relative_difference(&one.0, &many[0].0);
    assert!(
        drift <= 1e-5,
        "{what}: weights drift {drift:.2e} from one process's"
    );
    let (a, b) = (&one.2, &many[0].2);
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(1.0);
    assert!(
        close(a.0, b.0) && close(a.1, b.1),
        "{what}: losses {a:?} and {b:?}"
    );
    assert!(
        a.2.iter().zip(&b.2).all(|(&x, &y)| close(x, y)),
        "{what}: {a:?} and {b:?}"
    );
}

#[test]
fn threads_as_processes_train_as_one_process_on_the_interpreter() {
    let data = Source::Beans.load(0).expect("synthetic data");
    // 200 examples in batches of 9: the last batch has 2 rows, so with 3 processes one has none.
    let one = train("models/beans.net", &data, 9, 3, 0, false);
    for processes in [1, 2, 3] {
        let many = train("models/beans.net", &data, 9, 3, processes, false);
        like_one_process(&one[0], &many, &format!("beans on {processes}"));
    }
}

#[test]
fn threads_as_processes_train_as_one_process_compiled() {
    if crate::fmnist_missing() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("netc-parallel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    crate::fmnist_subset(&dir, 2048, 500);
    let data = Source::parse("fmnist", Some(&dir), None)
        .and_then(|s| s.load(0))
        .expect("the subset loads");
    let one = train("models/mlp.net", &data, 256, 2, 0, true);
    for processes in [1, 2, 3] {
        let many = train("models/mlp.net", &data, 256, 2, processes, true);
        like_one_process(&one[0], &many, &format!("mlp on {processes}"));
    }
    // Batch normalization uses each share's statistics while training (documented): the
    // processes still end with the same weights and running statistics.
    let many = train("models/lenet_bn.net", &data, 256, 1, 2, true);
    assert_eq!(
        bits(&many[0].0),
        bits(&many[1].0),
        "lenet_bn: weights differ"
    );
    assert_eq!(
        bits(&many[0].1),
        bits(&many[1].1),
        "lenet_bn: states differ"
    );
}

/// Processes that report other fingerprints are refused with E0515 naming the first that
/// differs from process 0; the same everywhere is agreement.
#[test]
fn processes_that_differ_are_named() {
    struct Fingerprints(Vec<u64>);
    impl Group for Fingerprints {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            self.0.len()
        }
        fn sum(&mut self, _: &[f32], _: &mut [f32]) {}
        fn sum_f64(&mut self, _: &mut [f64]) {}
        fn gather(&mut self, _: u64) -> Vec<u64> {
            self.0.clone()
        }
        fn bytes_sent(&self) -> u64 {
            0
        }
    }
    assert!(Parallel::agree(&mut Fingerprints(vec![7, 7, 7]), 7, "model").is_ok());
    let refused = Parallel::agree(&mut Fingerprints(vec![7, 7, 9, 8]), 7, "model file")
        .expect_err("process 2 differs");
    assert_eq!(refused.code, Code::E0515);
    assert!(
        refused
            .message
            .contains("process 2 of 4 has another model file"),
        "{}",
        refused.message
    );
}
