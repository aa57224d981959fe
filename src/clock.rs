//! The wall clock. Library code takes time as an argument; the binary is where the
//! real clock is read, here and nowhere else.

use capstan_core::Timestamp;

/// Now, as a [`Timestamp`].
pub fn wall_clock() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_ms(ms)
}
