//! The text log format: tracing-subscriber's default ("full") lines without colour, with the
//! access line written by hand.
//!
//! Every line reads `2026-12-01T07:00:00.123456Z  INFO target: field=value ...`. The access line
//! comes once per request, and through the generic formatter (field visitors and `Debug` for every
//! value, the date through `fmt` with padding) it cost about 10,000 instructions, a sixth of a
//! proxied 1 KB request (`bench/instructions.py --access-log`). Here its fields are written
//! directly (plain strings quoted as `Debug` would, integers by `itoa`, the duration as its
//! decimal) and the date by integer arithmetic into a fixed buffer. Any other line, and an access line
//! that this path could not write byte for byte as the default format does (inside a span, with a
//! message, before 1970 or after 9999), goes through the default formatter.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime as Clock;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of `--log-format text`.
pub(super) struct TextFormat {
    full: Format<Full, Clock>,
}

impl TextFormat {
    pub(super) fn new() -> Self {
        TextFormat {
            full: tracing_subscriber::fmt::format()
                .with_target(true)
                .with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() == crate::access_log::TARGET
            && meta.fields().field("message").is_none()
            && ctx.event_scope().is_none()
            && let Some(now) = Timestamp::now()
        {
            now.write(&mut writer)?;
            writer.write_str(level(meta.level()))?;
            writer.write_str(meta.target())?;
            writer.write_str(": ")?;
            let mut fields = Fields {
                out: &mut writer,
                first: true,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
            return writer.write_char('\n');
        }
        self.full.format_event(ctx, writer, event)
    }
}

/// The level as the default format pads it, and the space after it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    }
}

/// The fields as the default format writes them: `name=value`, separated by one space; strings
/// in `Debug` quotes, everything else as its `Debug`.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Writes `name=` (after a space but for the first field); false if the field is skipped.
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        // The default format leaves these out: a `log` record's metadata, already on the line.
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| self.out.write_str(name))
            .and_then(|()| self.out.write_char('='));
        self.result.is_ok()
    }

    fn integer(&mut self, field: &Field, value: impl itoa::Integer) {
        if self.name(field) {
            self.result = self.out.write_str(itoa::Buffer::new().format(value));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.name(field) {
            self.result = write!(self.out, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.name(field) {
            return;
        }
        // `Debug` escapes only `"` and `\` among printable ASCII; anything else takes `Debug`.
        let plain = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        self.result = if plain {
            self.out
                .write_char('"')
                .and_then(|()| self.out.write_str(value))
                .and_then(|()| self.out.write_char('"'))
        } else {
            write!(self.out, "{value:?}")
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.name(field) {
            self.result = self.out.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.name(field) {
            self.result = write_f64(self.out, value);
        }
    }
}

/// Writes `value` as its `Debug` does. A whole number of thousandths below 10^9 (the access
/// line's `duration_ms`) is written from its digits: `Debug` prints the shortest decimal that
/// reads back as the same `f64`, which for such a value is that number of thousandths, trailing
/// zeros trimmed, at least one digit after the point. Anything else takes `Debug`.
fn write_f64(out: &mut impl fmt::Write, value: f64) -> fmt::Result {
    let thousandths = (value * 1000.0).round();
    if !value.is_sign_positive() || thousandths >= 1e12 || thousandths / 1000.0 != value {
        return write!(out, "{value:?}");
    }
    // Exact: a non-negative whole number below 10^12.
    let thousandths = thousandths as u64;
    let (whole, fraction) = (thousandths / 1000, thousandths % 1000);
    out.write_str(itoa::Buffer::new().format(whole))?;
    let mut fraction_digits = [b'.', b'0', b'0', b'0'];
    zero_padded(&mut fraction_digits[1..], fraction);
    // ".0" for none; else the digits up to the last that is not zero.
    let kept = match fraction {
        f if f % 100 == 0 => 2,
        f if f % 10 == 0 => 3,
        _ => 4,
    };
    out.write_str(ascii(&fraction_digits[..kept])?)
}

/// The wall-clock time as the default format writes it, `2026-12-01T07:00:00.123456Z `
/// (a space after it), in UTC.
struct Timestamp {
    /// `2026-12-01T07:00:00.`
    second: [u8; 20],
    micros: u32,
}

impl Timestamp {
    /// Now, if the default format would write it as this one does (years 1970 to 9999).
    fn now() -> Option<Timestamp> {
        Timestamp::at(SystemTime::now())
    }

    fn at(time: SystemTime) -> Option<Timestamp> {
        let since = time.duration_since(UNIX_EPOCH).ok()?;
        Some(Timestamp {
            second: second_text(since.as_secs())?,
            micros: since.subsec_micros(),
        })
    }

    fn write(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let mut micros = [b'0'; 8];
        zero_padded(&mut micros[..6], u64::from(self.micros));
        micros[6..].copy_from_slice(b"Z ");
        out.write_str(ascii(&self.second)?)?;
        out.write_str(ascii(&micros)?)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` of `secs` after the epoch; `None` past the year 9999.
fn second_text(secs: u64) -> Option<[u8; 20]> {
    let days = i64::try_from(secs / 86_400).ok()?;
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        return None;
    }
    let time = secs % 86_400;
    let mut text = *b"0000-00-00T00:00:00.";
    zero_padded(&mut text[0..4], u64::try_from(year).ok()?);
    zero_padded(&mut text[5..7], month);
    zero_padded(&mut text[8..10], day);
    zero_padded(&mut text[11..13], time / 3600);
    zero_padded(&mut text[14..16], time / 60 % 60);
    zero_padded(&mut text[17..19], time % 60);
    Some(text)
}

/// Writes the last `slot.len()` decimal digits of `value` into `slot`, zeros in front.
fn zero_padded(slot: &mut [u8], mut value: u64) {
    for place in slot.iter_mut().rev() {
        // A digit: below 10.
        let digit = (value % 10) as u8;
        *place = b'0' + digit;
        value /= 10;
    }
}

/// Bytes this file wrote as ASCII, as a `str`.
fn ascii(bytes: &[u8]) -> Result<&str, fmt::Error> {
    std::str::from_utf8(bytes).map_err(|_| fmt::Error)
}

/// (year, month, day) of the day `days` after 1970-01-01, in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are positive and small: 1..=12 and 1..=31.
    (year, month.unsigned_abs(), day.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use proptest::prelude::*;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[test]
    fn the_date_is_the_utc_calendar_date_up_to_the_year_9999() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (1_764_547_200, "2025-12-01T00:00:00."),
            (1_796_083_199, "2026-11-30T23:59:59."),
            (253_402_300_799, "9999-12-31T23:59:59."),
        ] {
            let got = second_text(secs).unwrap();
            assert_eq!(std::str::from_utf8(&got).unwrap(), text, "{secs}");
        }
        assert_eq!(second_text(253_402_300_800), None, "the year 10000");
    }

    #[test]
    fn the_timestamp_has_microseconds_and_a_space_after_it() {
        let mut out = String::new();
        let at = UNIX_EPOCH + Duration::new(1_764_547_200, 1_234_567);
        Timestamp::at(at).unwrap().write(&mut out).unwrap();
        assert_eq!(out, "2025-12-01T00:00:00.001234Z ");
        out.clear();
        let later = UNIX_EPOCH + Duration::new(1_764_547_200, 999_999_999);
        Timestamp::at(later).unwrap().write(&mut out).unwrap();
        assert_eq!(out, "2025-12-01T00:00:00.999999Z ");
        assert!(Timestamp::at(UNIX_EPOCH - Duration::from_secs(1)).is_none());
    }

    fn debug_of(value: f64) -> String {
        let mut out = String::new();
        write_f64(&mut out, value).unwrap();
        out
    }

    proptest! {
        #[test]
        fn a_duration_in_milliseconds_reads_as_its_debug(thousandths in 0u64..2_000_000_000_000) {
            let value = (thousandths as f64).round() / 1e3;
            prop_assert_eq!(debug_of(value), format!("{value:?}"));
        }

        #[test]
        fn any_float_reads_as_its_debug(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            prop_assert_eq!(debug_of(value), format!("{value:?}"));
        }
    }

    #[test]
    fn special_floats_read_as_their_debug() {
        for value in [
            0.0,
            -0.0,
            0.001,
            0.1,
            0.5,
            1.0,
            10.0,
            123.45,
            999_999_999.999,
            1e-7,
            1e16,
        ] {
            assert_eq!(debug_of(value), format!("{value:?}"));
        }
    }

    /// Lines written, shared between a test and its subscriber.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Access lines and others, as the proxy writes them, with awkward values.
    fn emit() {
        for (path, request_id, duration) in [
            ("/v1/costs/by-service", "3f2a-11", 0.412),
            ("/v1/a b/\"quoted\"\\", "id \"with\" quotes", 12.0),
            ("/v1/ünïcödé/\u{7}", "tab\there", 1234.5),
        ] {
            tracing::info!(
                target: crate::access_log::TARGET,
                method = %"GET",
                path = %path,
                route = "/v1",
                status = 200u16,
                duration_ms = duration,
                bytes = 1024u64,
                request_id = request_id,
                error = "-",
                retried = false,
                outcome = "complete",
            );
        }
        tracing::info!(target: crate::access_log::TARGET, status = -1i64, "with a message");
        tracing::info_span!("request", request_id = "x").in_scope(|| {
            tracing::info!(target: crate::access_log::TARGET, status = 502u16, r#type = "span");
        });
        tracing::warn!(credential = "main", "the STS answered 503; retrying in 2s");
    }

    #[test]
    fn every_line_is_the_default_formats_line() {
        let ours = Lines::default();
        let theirs = Lines::default();
        let subscriber = |format_ours: bool, lines: Lines| -> Box<dyn Subscriber + Send + Sync> {
            let builder = tracing_subscriber::fmt()
                .with_writer(lines)
                .with_target(true)
                .with_ansi(false);
            match format_ours {
                true => Box::new(builder.event_format(TextFormat::new()).finish()),
                false => Box::new(builder.finish()),
            }
        };
        tracing::subscriber::with_default(subscriber(true, ours.clone()), emit);
        tracing::subscriber::with_default(subscriber(false, theirs.clone()), emit);
        let (ours, theirs) = (ours.text(), theirs.text());
        assert_eq!(ours.lines().count(), 6, "{ours}");
        for (a, b) in ours.lines().zip(theirs.lines()) {
            // The timestamps differ by the time between the runs; their shape does not.
            let (a_time, a_rest) = a.split_at(27);
            let (b_time, b_rest) = b.split_at(27);
            assert_eq!(a_rest, b_rest);
            let shape = |t: &str| t.bytes().map(|c| c.is_ascii_digit()).collect::<Vec<_>>();
            assert_eq!(shape(a_time), shape(b_time), "{a_time} / {b_time}");
            assert!(a_time.ends_with('Z'), "{a_time}");
        }
        assert!(
            ours.contains(" INFO access: method=GET path=/v1/costs/by-service "),
            "{ours}"
        );
    }
}
