//! A whole instance checkpoint as text, for status, `offsets get` and `offsets reset
//! --position`.
//!
//! What a checkpoint holds depends on the kind: a source's is its connector's position, which
//! the type renders itself ([`ConnectorType::render_position`], e.g. `index=876` or
//! `file=a.log offset=1234`); a sink's is a [`SinkCheckpoint`], the last written message id of
//! each input partition plus the sink's own position, which reads
//!
//! ```text
//! persistent://public/default/in-partition-0=12:3:-1 persistent://public/default/in-partition-1=12:7:-1 sink=length=4096
//! ```
//!
//! (`<topic>=<ledger>:<entry>:<batch index>` per partition, then ` sink=` and the type's text
//! of its own position when it has one; `none` for a checkpoint holding neither). Topic names
//! always hold `://` and never a space, so `sink=` cannot be mistaken for one; the sink's text
//! runs to the end of the line, so it may hold spaces itself.

use std::collections::BTreeMap;

use super::sink::{InputPosition, SinkCheckpoint};
use crate::api::registry::ConnectorType;
use crate::api::{ConnectorError, InputMessageId, Kind, Position};

/// What a sink checkpoint holding no partition and no sink position reads as.
const EMPTY: &str = "none";

/// The marker of the sink's own position in a sink checkpoint's text.
const SINK_MARKER: &str = "sink=";

/// The shape a sink checkpoint's text takes, for errors.
pub const SINK_CHECKPOINT_SHAPE: &str =
    "<topic>=<ledger>:<entry>:<batch index> ... [sink=<the sink's position>]";

/// Renders the checkpoint `position` of an instance of `connector_type` as text: the type's
/// own text for a source, the input partitions' message ids and the sink's own position for
/// a sink. Fails when the bytes are not a checkpoint of that type.
pub fn render_checkpoint(
    connector_type: &ConnectorType,
    position: &[u8],
) -> Result<String, ConnectorError> {
    match connector_type.kind {
        Kind::Source => connector_type.render_position(position),
        Kind::Sink => {
            let checkpoint = SinkCheckpoint::decode(position)?;
            let mut parts: Vec<String> = checkpoint
                .input
                .0
                .iter()
                .map(|(topic, id)| format!("{topic}={id}"))
                .collect();
            if !checkpoint.sink.is_empty() {
                parts.push(format!(
                    "{SINK_MARKER}{}",
                    connector_type.render_position(&checkpoint.sink)?
                ));
            }
            if parts.is_empty() {
                return Ok(EMPTY.to_owned());
            }
            Ok(parts.join(" "))
        }
    }
}

/// Parses what [`render_checkpoint`] renders back into checkpoint bytes for an instance of
/// `connector_type`. The error says what was wrong and the shape expected.
pub fn parse_checkpoint(
    connector_type: &ConnectorType,
    text: &str,
) -> Result<Position, ConnectorError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ConnectorError::InvalidPosition(
            "is empty (to forget the checkpoint give no position)".to_owned(),
        ));
    }
    match connector_type.kind {
        Kind::Source => connector_type.parse_position(text),
        Kind::Sink => parse_sink_checkpoint(connector_type, text)
            .map(|checkpoint| checkpoint.encode())
            .map_err(|error| match error {
                ConnectorError::InvalidPosition(reason) => ConnectorError::InvalidPosition(
                    format!("{reason}; expected {SINK_CHECKPOINT_SHAPE}"),
                ),
                other => other,
            }),
    }
}

fn parse_sink_checkpoint(
    connector_type: &ConnectorType,
    text: &str,
) -> Result<SinkCheckpoint, ConnectorError> {
    if text == EMPTY {
        return Ok(SinkCheckpoint::default());
    }
    // The sink's own text runs to the end: split it off before reading the partitions.
    let (partitions, sink_text) = if let Some(rest) = text.strip_prefix(SINK_MARKER) {
        ("", Some(rest))
    } else {
        match text.split_once(&format!(" {SINK_MARKER}")) {
            Some((partitions, rest)) => (partitions, Some(rest)),
            None => (text, None),
        }
    };
    let mut input = BTreeMap::new();
    for part in partitions.split_whitespace() {
        let (topic, id) = parse_partition(part)?;
        if input.insert(topic.to_owned(), id).is_some() {
            return Err(ConnectorError::InvalidPosition(format!(
                "partition {topic} is given twice"
            )));
        }
    }
    let sink = match sink_text {
        None => Vec::new(),
        Some(sink_text) if sink_text.trim().is_empty() => {
            return Err(ConnectorError::InvalidPosition(format!(
                "{SINK_MARKER} is empty (leave it out when the {} sink has no position)",
                connector_type.name
            )));
        }
        Some(sink_text) => connector_type
            .parse_position(sink_text.trim())
            .map_err(|error| match error {
                ConnectorError::InvalidPosition(reason) => {
                    ConnectorError::InvalidPosition(format!("{SINK_MARKER}: {reason}"))
                }
                other => other,
            })?,
    };
    Ok(SinkCheckpoint {
        input: InputPosition(input),
        sink,
    })
}

/// Parses `<topic>=<ledger>:<entry>:<batch index>`.
fn parse_partition(part: &str) -> Result<(&str, InputMessageId), ConnectorError> {
    let bad = |why: &str| ConnectorError::InvalidPosition(format!("{part:?} {why}"));
    // A topic may hold `=`, a message id never does.
    let (topic, id) = part
        .rsplit_once('=')
        .ok_or_else(|| bad("is not <topic>=<message id>"))?;
    if !topic.contains("://") {
        return Err(bad(
            "does not start with a topic (persistent://tenant/namespace/topic)",
        ));
    }
    let mut numbers = id.split(':');
    let (Some(ledger), Some(entry), Some(batch), None) = (
        numbers.next(),
        numbers.next(),
        numbers.next(),
        numbers.next(),
    ) else {
        return Err(bad("has no message id <ledger>:<entry>:<batch index>"));
    };
    let id = InputMessageId {
        ledger_id: ledger
            .parse()
            .map_err(|_| bad("has a ledger that is not a whole number"))?,
        entry_id: entry
            .parse()
            .map_err(|_| bad("has an entry that is not a whole number"))?,
        batch_index: batch
            .parse()
            .map_err(|_| bad("has a batch index that is not a number (-1: not batched)"))?,
    };
    Ok((topic, id))
}

#[cfg(all(test, feature = "blackhole", feature = "datagen", feature = "file"))]
mod tests {
    use super::*;
    use crate::api::registry::ConnectorType;
    use crate::connectors::{blackhole, datagen, file};

    fn id(ledger_id: u64, entry_id: u64, batch_index: i32) -> InputMessageId {
        InputMessageId {
            ledger_id,
            entry_id,
            batch_index,
        }
    }

    fn file_sink() -> ConnectorType {
        ConnectorType::sink::<file::FileSinkType>()
    }

    #[test]
    fn a_source_checkpoint_is_its_types_text() {
        let datagen = ConnectorType::source::<datagen::Datagen>();
        let position = 876_u64.to_be_bytes().to_vec();
        assert_eq!(
            render_checkpoint(&datagen, &position).expect("renders"),
            "index=876"
        );
        assert_eq!(
            parse_checkpoint(&datagen, " index=876 ").expect("parses"),
            position
        );
        let file = ConnectorType::source::<file::FileSourceType>();
        let position = parse_checkpoint(&file, "file=a b.log offset=1234").expect("parses");
        assert_eq!(
            render_checkpoint(&file, &position).expect("renders"),
            "file=a b.log offset=1234"
        );
        let error = parse_checkpoint(&datagen, "offset=3").expect_err("not datagen's");
        assert!(
            error.to_string().contains("index=<whole number>"),
            "{error}"
        );
        assert!(render_checkpoint(&datagen, &[1, 2]).is_err());
    }

    #[test]
    fn a_sink_checkpoint_lists_partitions_then_the_sinks_own_position() {
        let checkpoint = SinkCheckpoint {
            input: InputPosition(BTreeMap::from([
                (
                    "persistent://public/default/in-partition-0".to_owned(),
                    id(12, 3, -1),
                ),
                (
                    "persistent://public/default/in-partition-1".to_owned(),
                    id(12, 7, 4),
                ),
            ])),
            sink: 4096_u64.to_be_bytes().to_vec(),
        };
        let text = render_checkpoint(&file_sink(), &checkpoint.encode()).expect("renders");
        assert_eq!(
            text,
            "persistent://public/default/in-partition-0=12:3:-1 \
             persistent://public/default/in-partition-1=12:7:4 sink=length=4096"
        );
        let parsed = parse_checkpoint(&file_sink(), &text).expect("parses");
        assert_eq!(
            SinkCheckpoint::decode(&parsed).expect("decodes"),
            checkpoint
        );
    }

    #[test]
    fn sink_checkpoints_without_a_sink_position_or_partitions_read_back() {
        let blackhole = ConnectorType::sink::<blackhole::Blackhole>();
        let cases = [
            SinkCheckpoint {
                // A topic may hold `=` (Pulsar allows it in names).
                input: InputPosition(BTreeMap::from([(
                    "persistent://public/default/a=b".to_owned(),
                    id(1, 0, -1),
                )])),
                sink: Vec::new(),
            },
            SinkCheckpoint {
                input: InputPosition::default(),
                sink: 7_u64.to_be_bytes().to_vec(),
            },
            SinkCheckpoint::default(),
        ];
        let texts: Vec<String> = cases
            .iter()
            .map(|checkpoint| render_checkpoint(&blackhole, &checkpoint.encode()).expect("renders"))
            .collect();
        assert_eq!(
            texts,
            [
                "persistent://public/default/a=b=1:0:-1",
                "sink=records=7",
                "none"
            ]
        );
        for (checkpoint, text) in cases.iter().zip(&texts) {
            let parsed = parse_checkpoint(&blackhole, text).expect("parses");
            assert_eq!(
                &SinkCheckpoint::decode(&parsed).expect("decodes"),
                checkpoint
            );
        }
    }

    #[test]
    fn bad_sink_checkpoint_text_is_refused_saying_what_and_the_shape() {
        let sink = file_sink();
        let refused = |text: &str| parse_checkpoint(&sink, text).expect_err(text).to_string();
        for (text, needle) in [
            ("", "is empty"),
            ("index=5", "does not start with a topic"),
            (
                "persistent://public/default/t",
                "is not <topic>=<message id>",
            ),
            ("persistent://public/default/t=1:2", "has no message id"),
            ("persistent://public/default/t=1:2:3:4", "has no message id"),
            ("persistent://public/default/t=x:2:-1", "ledger"),
            ("persistent://public/default/t=1:-2:-1", "entry"),
            ("persistent://public/default/t=1:2:z", "batch index"),
            (
                "persistent://public/default/t=1:2:-1 persistent://public/default/t=1:3:-1",
                "given twice",
            ),
            (
                "persistent://public/default/t=1:2:-1 sink=",
                "sink= is empty",
            ),
            (
                "persistent://public/default/t=1:2:-1 sink=offset=9",
                "length=<whole number>",
            ),
        ] {
            let error = refused(text);
            assert!(error.contains(needle), "{text:?}: {error}");
        }
        for text in [
            "index=5",
            "persistent://public/default/t=1:2:-1 sink=offset=9",
        ] {
            assert!(refused(text).ends_with(SINK_CHECKPOINT_SHAPE), "{text}");
        }
        // Bytes that are no sink checkpoint do not render.
        assert!(render_checkpoint(&sink, b"from-here").is_err());
    }
}
