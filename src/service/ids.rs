//! Resource ids: a prefix, a dash and 17 lowercase hex digits (AWS's long id format).

use rand::Rng;

/// A random id with the prefix, like `ami-0a1b2c3d4e5f60718`.
pub fn generate(prefix: &str) -> String {
    let n: u128 = rand::thread_rng().gen::<u128>() & ((1u128 << 68) - 1);
    format!("{prefix}-{n:017x}")
}

/// True if `id` is `prefix-` followed by 8 or 17 lowercase hex digits.
pub fn is_well_formed(id: &str, prefix: &str) -> bool {
    let Some(rest) = id.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    (rest.len() == 8 || rest.len() == 17)
        && rest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True if `id` is a twelve-digit account id.
pub fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The prefix of an id (`ami` for `ami-0123...`), if it has one.
pub fn prefix_of(id: &str) -> Option<&str> {
    id.split_once('-').map(|(p, _)| p)
}

/// A random request id in UUID form.
pub fn request_id() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random string of `len` characters from `alphabet`.
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_ami_is_well_formed() {
        let id = generate("ami");
        assert_eq!(id.len(), 21);
        assert!(is_well_formed(&id, "ami"), "{id}");
    }

    #[test]
    fn is_well_formed_wrong_prefix_or_digits_is_false() {
        assert!(!is_well_formed("snap-0123456789abcdef0", "ami"));
        assert!(!is_well_formed("ami-0123456789ABCDEF0", "ami"));
        assert!(!is_well_formed("ami-123", "ami"));
        assert!(is_well_formed("ami-12345678", "ami"));
    }

    #[test]
    fn request_id_has_uuid_shape() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
