//! Hashes of parameter and result values that compare equal across wire
//! formats, so a child query's bind parameter can be matched to a value its
//! parent returned (the N+1 parent) without keeping either value.
//!
//! A driver may send an id as text (`"42"`) and receive it in binary (four
//! bytes), or the other way round. Integers and UUIDs are therefore hashed
//! in one canonical form whatever their format: text digits and binary
//! 2/4/8-byte integers as the integer, text and binary UUIDs as their 16
//! bytes. Anything else is hashed as its bytes. A binary float8 is
//! indistinguishable from an int8 here; that only makes a chance match
//! slightly likelier, never loses one.

use xxhash_rust::xxh3::xxh3_64_with_seed;

const SEED_INT: u64 = 1;
const SEED_UUID: u64 = 2;
const SEED_BYTES: u64 = 3;

/// Hash of one value as sent or received; `binary` is its wire format.
pub fn value_hash(bytes: &[u8], binary: bool) -> u64 {
    if binary {
        match bytes.len() {
            2 => return int_hash(i16::from_be_bytes([bytes[0], bytes[1]]) as i64),
            4 => {
                return int_hash(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as i64)
            }
            8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(bytes);
                return int_hash(i64::from_be_bytes(b));
            }
            16 => return xxh3_64_with_seed(bytes, SEED_UUID),
            _ => {}
        }
    } else {
        if let Some(i) = parse_int(bytes) {
            return int_hash(i);
        }
        if let Some(u) = parse_uuid(bytes) {
            return xxh3_64_with_seed(&u, SEED_UUID);
        }
    }
    xxh3_64_with_seed(bytes, SEED_BYTES)
}

fn int_hash(i: i64) -> u64 {
    xxh3_64_with_seed(&i.to_le_bytes(), SEED_INT)
}

fn parse_int(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // A leading zero would make "007" equal 7; text ids never have one.
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn parse_uuid(b: &[u8]) -> Option<[u8; 16]> {
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = (b[i] as char).to_digit(16)?;
        let lo = (*b.get(i + 1)? as char).to_digit(16)?;
        out[n] = (hi * 16 + lo) as u8;
        n += 1;
        i += 2;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_match_across_formats() {
        let t = value_hash(b"42", false);
        assert_eq!(t, value_hash(&42i32.to_be_bytes(), true));
        assert_eq!(t, value_hash(&42i64.to_be_bytes(), true));
        assert_eq!(t, value_hash(&42i16.to_be_bytes(), true));
        assert_eq!(
            value_hash(b"-7", false),
            value_hash(&(-7i32).to_be_bytes(), true)
        );
        assert_ne!(t, value_hash(b"43", false));
        assert_ne!(value_hash(b"007", false), value_hash(b"7", false));
    }

    #[test]
    fn uuids_match_across_formats() {
        let text = b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        let bin = [
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ];
        assert_eq!(value_hash(text, false), value_hash(&bin, true));
        assert_ne!(
            value_hash(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1x", false),
            value_hash(&bin, true)
        );
    }

    #[test]
    fn other_values_hash_their_bytes() {
        assert_eq!(value_hash(b"alice", false), value_hash(b"alice", true));
        assert_ne!(value_hash(b"alice", false), value_hash(b"bob", false));
        assert_ne!(value_hash(b"", false), value_hash(b"0", false));
    }
}
