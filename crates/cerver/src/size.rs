//! Sizes as operators write them: `20G`, `512M`, `1.5T`, `4096` (bytes). Units are binary
//! (K = 1024) with or without `B`/`iB` and in any case, so `20G`, `20GB` and `20GiB` agree.
//!
//! Hand-rolled: the size crates disagree on whether `G`/`GB` is decimal or binary (`bytesize`
//! reads `GB` as 10^9), and a disk cap that differs from `df -h`'s reading by 7% surprises;
//! the grammar is one number and one optional unit, tested below.

/// Bytes in `text`, or why it is not a size.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit (use K, M, G or T, or bytes)"
            ));
        }
    };
    let bad = || format!("{text:?} is not a size (like 20G, 512M or 1048576)");
    if number.is_empty() || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("20gb"), Ok(20 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 7 K "), Ok(7 << 10));
        for bad in ["", "G", "20X", "1.2.3G", "-5G", "0", "99999999999T", "nanG"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
