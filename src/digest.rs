//! Content digests: how a file is recognised by its bytes, locally and in the target.

use md5::{Digest, Md5};

/// MD5 of `bytes`, lowercase hex: what S3 reports as the ETag of a single-part object, so
/// a committed file and its uploaded copy compare without downloading either.
pub fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::md5_hex;

    #[test]
    fn md5_of_the_empty_input_is_the_known_one() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }
}
