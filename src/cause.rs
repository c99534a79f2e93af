//! The innermost cause of an error, for messages: the upstream pool, the STS client and the
//! request body all report what actually happened rather than the wrappers around it.

/// The innermost cause of an error: short and secret-free ("Connection refused", "invalid peer
/// certificate: UnknownIssuer", "invalid chunk size: overflow").
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
