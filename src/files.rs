//! Size-capped file reading, for the files the config names (secrets, PEM certificates and keys).

use std::io::Read as _;
use std::path::Path;

use zeroize::Zeroizing;

/// A file's bytes, refusing one larger than `max` before reading it all (a wrong path such as a
/// log or a device must not be read whole). Zeroized on drop: it may hold a secret or a key.
pub(crate) fn read_limited(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "the file is larger than {} KiB; is it the right file?",
            max / 1024
        ));
    }
    Ok(bytes)
}
