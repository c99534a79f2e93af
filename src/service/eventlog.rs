//! The service's entries in the Windows Event Log (the Application log, the source named after
//! the service): the source's registration (`service install`, removed by `uninstall`) and
//! [`EventLogLayer`], which writes there the log lines that carry an `event_id` field, so that a
//! BI gateway's monitoring sees the proxy start, stop and fail. The ids (docs/windows.md, "Event
//! Log"): 1 started, 2 stopped, 3 config rejected, 4 fatal error, 5 token failing, 6 token
//! recovered. Writing an entry never fails the service: a failure is logged at debug.

use std::fmt::{self, Write as _};
use std::io;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use windows_sys::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_SUCCESS, WIN32_ERROR};
use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE,
    REPORT_EVENT_TYPE, RegisterEventSourceW, ReportEventW,
};
use windows_sys::Win32::System::Registry::{
    HKEY_LOCAL_MACHINE, REG_DWORD, REG_EXPAND_SZ, RegDeleteKeyW, RegSetKeyValueW,
};

/// The field that marks a log line for the Event Log, and holds its event id (a `u32`).
const EVENT_ID: &str = "event_id";
/// The message file of the source: the one .NET's `EventLog.CreateEventSource` and PowerShell's
/// `New-EventLog` register. Its message for every event id is "%1", the entry's text as we wrote
/// it, so the entries read in full in Event Viewer and `Get-WinEvent` without a message DLL of
/// our own (which would need Microsoft's message compiler in the build, and a second file to
/// ship). .NET Framework 4.8, which has it, is on every machine that runs the Power BI gateway.
const MESSAGE_FILE: &str =
    r"%SystemRoot%\Microsoft.NET\Framework64\v4.0.30319\EventLogMessages.dll";
/// Error, warning and information: the entry types the source writes.
const TYPES_SUPPORTED: u32 = 7;
/// ReportEventW takes at most 31,839 characters in one string: a longer text is cut.
const MAX_TEXT: usize = 31_000;

/// The source's key under HKLM: where the Event Log looks up the message file of `name`.
pub(super) fn source_key(name: &str) -> String {
    format!(r"SYSTEM\CurrentControlSet\Services\EventLog\Application\{name}")
}

/// The PowerShell command that registers the source as [`register`] does, for an operator to
/// run when `install` could not.
pub(super) fn register_command(name: &str) -> String {
    format!("New-EventLog -LogName Application -Source {name}")
}

/// Registers the Application log's source `name`, with [`MESSAGE_FILE`].
pub(super) fn register(name: &str) -> io::Result<()> {
    let key = wide(&source_key(name));
    let file = wide(MESSAGE_FILE);
    let file: Vec<u8> = file.iter().flat_map(|unit| unit.to_ne_bytes()).collect();
    set_value(&key, "EventMessageFile", REG_EXPAND_SZ, &file)?;
    set_value(
        &key,
        "TypesSupported",
        REG_DWORD,
        &TYPES_SUPPORTED.to_ne_bytes(),
    )
}

/// Removes the source `name`; a source that is not there is no error. Entries written stay in
/// the log.
pub(super) fn deregister(name: &str) -> io::Result<()> {
    let key = wide(&source_key(name));
    // SAFETY: a predefined key and a NUL-terminated UTF-16 path that outlives the call.
    #[expect(unsafe_code, reason = "the Win32 registry call")]
    let status = unsafe { RegDeleteKeyW(HKEY_LOCAL_MACHINE, key.as_ptr()) };
    match status {
        ERROR_FILE_NOT_FOUND => Ok(()),
        status => win32(status),
    }
}

/// Sets the value `value` of the key `key` under HKLM (creating the key) to `data`.
fn set_value(key: &[u16], value: &str, kind: u32, data: &[u8]) -> io::Result<()> {
    let value = wide(value);
    let len = u32::try_from(data.len()).map_err(io::Error::other)?;
    // SAFETY: a predefined key, NUL-terminated UTF-16 names and `len` bytes of `data`, all of
    // which outlive the call.
    #[expect(unsafe_code, reason = "the Win32 registry call")]
    let status = unsafe {
        RegSetKeyValueW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            value.as_ptr(),
            kind,
            data.as_ptr().cast(),
            len,
        )
    };
    win32(status)
}

fn win32(status: WIN32_ERROR) -> io::Result<()> {
    match status {
        ERROR_SUCCESS => Ok(()),
        code => Err(io::Error::from_raw_os_error(code as i32)),
    }
}

/// `text` as a NUL-terminated UTF-16 string.
fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain([0]).collect()
}

/// The tracing layer of the service: each log line with an `event_id` field becomes an entry
/// of the Application log, source = the service's name. An ERROR line is an error, a WARN line
/// a warning, anything else information; the text is the line's message, then its other
/// fields, one `name: value` a line.
pub struct EventLogLayer {
    source: Vec<u16>,
}

impl EventLogLayer {
    /// The layer of the service `name`.
    pub fn new(name: &str) -> Self {
        EventLogLayer { source: wide(name) }
    }
}

impl<S: Subscriber> Layer<S> for EventLogLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if let Some(entry) = Entry::of(event)
            && let Err(e) = report(&self.source, &entry)
        {
            // No event_id: this line stays out of the Event Log.
            tracing::debug!(error = %e, "cannot write to the Event Log");
        }
    }
}

/// Writes one entry for the service `name` without a subscriber: for the one failure that
/// comes before logging is set up, the log file that cannot be written.
pub fn report_error(name: &str, event_id: u32, text: &str) {
    let entry = Entry {
        id: Some(event_id),
        kind: EVENTLOG_ERROR_TYPE,
        message: text.to_string(),
        fields: String::new(),
    };
    let _ = report(&wide(name), &entry);
}

/// What one log line writes to the Event Log.
struct Entry {
    id: Option<u32>,
    kind: REPORT_EVENT_TYPE,
    message: String,
    fields: String,
}

impl Entry {
    /// The entry of `event`, if it has an `event_id` (checked in its metadata first: most
    /// lines, the access line among them, have none and cost no more than that).
    fn of(event: &Event<'_>) -> Option<Entry> {
        event.metadata().fields().field(EVENT_ID)?;
        let kind = match *event.metadata().level() {
            Level::ERROR => EVENTLOG_ERROR_TYPE,
            Level::WARN => EVENTLOG_WARNING_TYPE,
            _ => EVENTLOG_INFORMATION_TYPE,
        };
        let mut entry = Entry {
            id: None,
            kind,
            message: String::new(),
            fields: String::new(),
        };
        event.record(&mut entry);
        entry.id.map(|_| entry)
    }

    /// The message, then the fields, cut to [`MAX_TEXT`] characters, as a NUL-terminated
    /// UTF-16 string; a line break is `\r\n`, as Event Viewer shows it (a config error's hint
    /// comes on a line of its own).
    fn text(&self) -> Vec<u16> {
        let mut text = Vec::with_capacity(self.message.len() + self.fields.len() + 1);
        let mut previous = '\0';
        for c in self.message.chars().chain(self.fields.chars()) {
            let carriage_return = c == '\n' && previous != '\r';
            if text.len() + usize::from(carriage_return) + c.len_utf16() > MAX_TEXT {
                break;
            }
            if carriage_return {
                text.push(u16::from(b'\r'));
            }
            text.extend_from_slice(c.encode_utf16(&mut [0; 2]));
            previous = c;
        }
        text.push(0);
        text
    }

    fn push(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let name = field.name();
        if name == "message" {
            let _ = self.message.write_fmt(value);
        } else if !name.starts_with("log.") {
            let name = name.strip_prefix("r#").unwrap_or(name);
            let _ = write!(self.fields, "\n{name}: {value}");
        }
    }
}

impl Visit for Entry {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == EVENT_ID {
            self.id = u32::try_from(value).ok();
        } else {
            self.push(field, format_args!("{value}"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == EVENT_ID {
            self.id = u32::try_from(value).ok();
        } else {
            self.push(field, format_args!("{value}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, format_args!("{value:?}"));
    }
}

/// Writes `entry` to the Application log as the source `source` (NUL-terminated UTF-16). The
/// source is opened for each entry: there are a handful in a service's life.
fn report(source: &[u16], entry: &Entry) -> io::Result<()> {
    let Some(id) = entry.id else {
        return Ok(());
    };
    let text = entry.text();
    let strings = [text.as_ptr()];
    // SAFETY: a null server name (this machine) and a NUL-terminated UTF-16 source name that
    // outlives the call.
    #[expect(unsafe_code, reason = "the Win32 Event Log call")]
    let handle = unsafe { RegisterEventSourceW(std::ptr::null(), source.as_ptr()) };
    if handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the handle RegisterEventSourceW returned; one NUL-terminated UTF-16 string, which
    // outlives the call; no user SID, no raw data.
    #[expect(unsafe_code, reason = "the Win32 Event Log call")]
    let written = unsafe {
        ReportEventW(
            handle,
            entry.kind,
            0,
            id,
            std::ptr::null_mut(),
            1,
            0,
            strings.as_ptr(),
            std::ptr::null(),
        )
    };
    let outcome = if written == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: the handle RegisterEventSourceW returned, closed once.
    #[expect(unsafe_code, reason = "the Win32 Event Log call")]
    let _ = unsafe { DeregisterEventSource(handle) };
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Keeps the entries a layer would write: (id, type, text).
    struct Entries(Arc<Mutex<Vec<(u32, REPORT_EVENT_TYPE, String)>>>);

    impl<S: Subscriber> Layer<S> for Entries {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            if let Some(entry) = Entry::of(event) {
                let text = String::from_utf16_lossy(&entry.text());
                let text = text.trim_end_matches('\0').to_string();
                let id = entry.id.unwrap();
                self.0.lock().unwrap().push((id, entry.kind, text));
            }
        }
    }

    #[test]
    fn lines_with_an_event_id_become_entries_with_their_fields_as_text() {
        let entries = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Entries(entries.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(event_id = 1u32, service = "acp", "service started");
            tracing::info!(status = 200, "an access line, not an entry");
            tracing::error!(
                event_id = 3u32,
                "config error: {}\n  hint: 60m",
                "`token.max_age`"
            );
            tracing::warn!(event_id = 2u32, exit_code = 1, "service stopped");
            tracing::info!(event_id = -1, "no entry: not an id");
        });
        let entries = entries.lock().unwrap();
        assert_eq!(
            *entries,
            [
                (
                    1,
                    EVENTLOG_INFORMATION_TYPE,
                    "service started\r\nservice: acp".to_string()
                ),
                (
                    3,
                    EVENTLOG_ERROR_TYPE,
                    "config error: `token.max_age`\r\n  hint: 60m".to_string()
                ),
                (
                    2,
                    EVENTLOG_WARNING_TYPE,
                    "service stopped\r\nexit_code: 1".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_long_text_is_cut() {
        let entry = Entry {
            id: Some(4),
            kind: EVENTLOG_ERROR_TYPE,
            message: "é".repeat(MAX_TEXT + 10),
            fields: String::new(),
        };
        let text = entry.text();
        assert_eq!(text.len(), MAX_TEXT + 1);
        assert_eq!(text.last(), Some(&0));
    }
}
