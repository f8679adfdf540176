//! Bloom filter indexes (`indexes/bloom/{ns}.bloom`), checked from their
//! header.

/// Checks a bloom filter from its first 24 bytes and its size: non-empty,
/// and, for filters in the `PQBF` format, a bit count that matches the
/// size. Filters in other formats only need to be non-empty.
///
/// # Errors
/// A one-line reason.
pub fn check_bloom(size: u64, header: &[u8]) -> std::result::Result<(), String> {
    if size == 0 {
        return Err("is empty".into());
    }
    if header.len() >= 24 && &header[..4] == b"PQBF" {
        let m = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        if m == 0 || m % 64 != 0 {
            return Err(format!("bit count {m} is not a positive multiple of 64"));
        }
        if 24 + m / 8 != size {
            return Err(format!(
                "declares {m} bits, which needs {} bytes, but the file has {size} (truncated?)",
                24 + m / 8
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_headers() {
        let mut h = b"PQBF\x01\x07\0\0".to_vec();
        h.extend_from_slice(&128u64.to_le_bytes());
        h.extend_from_slice(&3u64.to_le_bytes());
        assert!(check_bloom(24 + 16, &h).is_ok());
        assert!(check_bloom(24 + 8, &h).unwrap_err().contains("truncated"));
        assert_eq!(check_bloom(0, &[]).unwrap_err(), "is empty");
        assert!(check_bloom(10, b"other").is_ok());
    }
}
