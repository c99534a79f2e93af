//! Reading the files the proxy is pointed at (the config, secrets, keys, certificates, CA files)
//! safely: whatever the path leads to, a read never blocks (a FIFO or a device is refused before
//! a byte is read), never grows without bound (a size cap per kind of file), and names what was
//! wrong. The caller runs it off the request threads (`reload.rs`: a blocking task).

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use zeroize::Zeroizing;

/// Largest config file read: 1 MiB.
pub(crate) const MAX_CONFIG_FILE: u64 = 1024 * 1024;
/// Largest secret, key or certificate file read: 64 KiB.
pub(crate) const MAX_SMALL_FILE: u64 = 64 * 1024;
/// Largest CA bundle read (`ca_file`, `client_ca`): 1 MiB, room for a whole system bundle.
pub(crate) const MAX_CA_FILE: u64 = 1024 * 1024;

/// A file's bytes. The path must lead (symlinks followed) to a regular file of at most `max`
/// bytes: a FIFO, a device, a socket or a directory is refused without reading from it, and a
/// file that grows past `max` while it is read is refused too. Zeroized on drop: it may hold a
/// secret or a key.
pub(crate) fn read_limited(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    let file = open_without_blocking(path)?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!(
            "it is not a regular file but {}; point the setting at a file",
            kind(&meta)
        ));
    }
    if meta.len() > max {
        return Err(too_large(max));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(bytes)
}

fn too_large(max: u64) -> String {
    format!(
        "the file is larger than {} KiB; is it the right file?",
        max / 1024
    )
}

/// Opens `path` for reading. On Unix with `O_NONBLOCK`: opening a FIFO with no writer, or a
/// device, would otherwise wait forever (and a process stuck there ignores SIGTERM).
fn open_without_blocking(path: &Path) -> Result<File, String> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    options
        .open(path)
        .map_err(|e| match std::fs::metadata(path) {
            // Windows does not open a directory as a file at all ("Access denied"): say what it is.
            Ok(meta) if !meta.is_file() => format!(
                "it is not a regular file but {}; point the setting at a file",
                kind(&meta)
            ),
            _ => e.to_string(),
        })
}

/// What a path that is not a regular file leads to, for the error.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a file"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("acp-files-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_files_within_the_cap_are_read() {
        let dir = scratch("ok");
        let file = dir.join("secret");
        std::fs::write(&file, "s3cr3t\n").unwrap();
        assert_eq!(&read_limited(&file, 64).unwrap()[..], b"s3cr3t\n");
        std::fs::write(&file, vec![b'a'; 65]).unwrap();
        let e = read_limited(&file, 64).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        let e = read_limited(&dir, 64).unwrap_err();
        assert!(e.contains("a directory"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = scratch("special");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // No writer: a blocking open would wait here forever.
        let e = read_limited(&fifo, 64).unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        for device in ["/dev/zero", "/dev/null"] {
            let e = read_limited(Path::new(device), 64).unwrap_err();
            assert!(e.contains("a device"), "{device}: {e}");
        }
        // A symlink is followed to what it leads to.
        let link = dir.join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read_limited(&link, 64).unwrap_err();
        assert!(e.contains("a device"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
