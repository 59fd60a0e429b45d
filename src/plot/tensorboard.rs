//! TensorBoard event files: a run's scalars (loss and accuracy, train and test, per epoch) in
//! the format TensorBoard reads, so netc runs show beside other frameworks' runs. A file is a
//! sequence of TFRecords, each holding one `Event` protocol buffer; the messages are the
//! fields of TensorFlow's `event.proto` and `summary.proto` that scalars use.

use crate::diagnostics::{Code, Diagnostic};
use crate::runtime::{EpochReport, Session, Watcher};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One record of an event file (`tensorflow/core/util/event.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum What {
    /// The first record of a file says which format follows.
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// Named values at one step (`tensorflow/core/framework/summary.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<Value>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Value {
    #[prost(string, tag = "1")]
    tag: String,
    /// A oneof in `summary.proto`, so that a value of 0 is written too.
    #[prost(oneof = "Kind", tags = "2")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(float, tag = "2")]
    SimpleValue(f32),
}

/// An event file in a directory, appended to after every epoch.
pub struct EventFile {
    path: PathBuf,
    file: std::fs::File,
}

impl EventFile {
    /// Creates `dir` if needed and a new event file in it, headed by its format's version.
    pub fn create(dir: &Path) -> Result<EventFile, Diagnostic> {
        let cannot = |e: std::io::Error| {
            Diagnostic::plain(
                Code::E0512,
                format!("cannot write TensorBoard events to {}: {e}", dir.display()),
            )
        };
        std::fs::create_dir_all(dir).map_err(cannot)?;
        let now = wall_time();
        // TensorBoard reads every file whose name holds `tfevents`; the process id keeps two
        // runs started in the same second apart.
        let name = format!(
            "events.out.tfevents.{}.netc.{}",
            now as u64,
            std::process::id()
        );
        let path = dir.join(name);
        let file = std::fs::File::create(&path).map_err(cannot)?;
        let mut events = EventFile { path, file };
        events.write(&Event {
            wall_time: now,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        Ok(events)
    }

    /// Appends an epoch's scalars, at step = epoch.
    pub fn add(&mut self, report: &EpochReport) -> Result<(), Diagnostic> {
        let mut scalars = vec![
            ("loss/train".to_string(), Some(report.train_loss)),
            ("loss/test".to_string(), Some(report.test_loss)),
        ];
        for m in &report.metrics {
            scalars.push((format!("{}/train", m.metric.name()), m.train));
            scalars.push((format!("{}/test", m.metric.name()), m.test));
        }
        scalars.push(("lr".to_string(), report.lr));
        scalars.push(("seconds/epoch".to_string(), Some(report.seconds)));
        let value = (scalars.iter())
            .filter_map(|(tag, v)| {
                Some(Value {
                    tag: tag.clone(),
                    kind: Some(Kind::SimpleValue((*v)? as f32)),
                })
            })
            .collect();
        self.write(&Event {
            wall_time: wall_time(),
            step: i64::try_from(report.epoch).unwrap_or(i64::MAX),
            what: Some(What::Summary(Summary { value })),
        })
    }

    /// Appends one event as a TFRecord and flushes it, so TensorBoard sees it at once.
    fn write(&mut self, event: &Event) -> Result<(), Diagnostic> {
        let data = prost::Message::encode_to_vec(event);
        let record = record(&data);
        (self.file.write_all(&record))
            .and_then(|()| self.file.flush())
            .map_err(|e| {
                Diagnostic::plain(
                    Code::E0512,
                    format!("cannot write {}: {e}", self.path.display()),
                )
            })
    }
}

impl Watcher for EventFile {
    fn epoch(&mut self, _: &mut Session, history: &[EpochReport]) -> Result<(), Diagnostic> {
        match history.last() {
            Some(report) => self.add(report),
            None => Ok(()),
        }
    }

    fn end(&mut self, _: &[EpochReport]) -> Result<(), Diagnostic> {
        Ok(())
    }
}

/// Seconds since the Unix epoch.
fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A TFRecord: the data's length (little-endian u64) and its masked CRC, the data, and the
/// data's masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// TFRecord's checksum: CRC-32C, rotated and offset so that a CRC of data holding CRCs is not
/// trivially related to them.
fn masked_crc(bytes: &[u8]) -> u32 {
    const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let crc = CASTAGNOLI.checksum(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    /// Known CRC-32C values (RFC 3720, appendix B.4) and TFRecord's masking of them.
    #[test]
    fn crc32c_matches_the_published_check_values() {
        const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
        assert_eq!(CASTAGNOLI.checksum(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(CASTAGNOLI.checksum(&[0xffu8; 32]), 0x62a8_ab43);
        // 0x8a9136aa rotated right by 15 bits is 0x6d55_1522; plus 0xa282ead8.
        assert_eq!(super::masked_crc(&[0u8; 32]), 0x0fd7_fffa);
    }
}
