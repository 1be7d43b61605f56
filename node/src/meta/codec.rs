//! The one place bincode is used: log entries, snapshots, and Raft messages between nodes.
//!
//! bincode 2.x is unmaintained (RUSTSEC-2025-0141), so it stays behind these two functions and
//! every decode runs with a size limit: a malformed or hostile length prefix fails instead of
//! allocating gigabytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest message or stored value the codec decodes, in bytes.
pub const MAX_DECODED_BYTES: usize = 256 * 1024 * 1024;

/// Errors of encoding or decoding.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        #[source]
        source: bincode::error::EncodeError,
    },
    /// The bytes are not a valid encoding (truncated, corrupted, or over the size limit).
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why.
        #[source]
        source: bincode::error::DecodeError,
    },
    /// The bytes hold a valid value followed by garbage.
    #[error("cannot decode {what}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODED_BYTES>()
}

/// Encodes `value`; `what` names it in an error.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config())
        .map_err(|source| CodecError::Encode { what, source })
}

/// Decodes one whole value from `bytes`; `what` names it in an error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|source| CodecError::Decode { what, source })?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes {
            what,
            extra: bytes.len() - read,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let value = (7u64, "seven".to_owned(), vec![1u8, 2, 3]);
        let bytes = encode("a tuple", &value).unwrap();
        assert_eq!(
            decode::<(u64, String, Vec<u8>)>("a tuple", &bytes).unwrap(),
            value
        );
    }

    #[test]
    fn truncated_and_padded_input_is_refused() {
        let bytes = encode("a string", &"hello".to_owned()).unwrap();
        let error = decode::<String>("a string", &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(error, CodecError::Decode { .. }), "{error}");
        let mut padded = bytes;
        padded.push(0);
        let error = decode::<String>("a string", &padded).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot decode a string: 1 unexpected trailing bytes"
        );
    }

    #[test]
    fn a_huge_length_prefix_fails_instead_of_allocating() {
        // A varint length of u64::MAX - 1 followed by nothing.
        let bytes = [0xFD, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        let error = decode::<Vec<u8>>("a vector", &bytes).unwrap_err();
        assert!(matches!(error, CodecError::Decode { .. }), "{error}");
    }
}
