//! Standard cron schedules as upstream parses them (`robfig/cron/v3`'s
//! `ParseStandard`): five fields (minute, hour, day of month, month, day of
//! week) with `*`, `?`, lists, ranges, steps (`*/5`, `1-10/2`, and `N/step`
//! meaning `N-max/step`), month and weekday names, Sunday as 0 or 7, and the
//! macros `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//! `@midnight`, `@hourly`. When both day fields are restricted (neither
//! starts with `*` or `?`), a day matches either (cron's OR rule).
//!
//! Times are Unix seconds; a schedule is read in a fixed UTC offset.

use trellis_types::time::{civil_from_days, days_from_civil};

/// A parsed schedule: one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// The day-of-month field is `*`/`?` (without a step above 1).
    dom_star: bool,
    /// The day-of-week field is `*`/`?` (without a step above 1).
    dow_star: bool,
    /// Seconds east of UTC the schedule is read in.
    offset: i64,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far `next` and `prev` search before deciding a schedule never fires
/// (robfig's limit).
const SEARCH_YEARS: i64 = 5;

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The first name's value.
    name_base: u32,
}

fn value(s: &str, b: &Bounds) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + b.name_base);
    }
    s.parse::<u32>().map_err(|_| {
        format!("failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax")
    })
}

/// One comma-separated part: bits and whether it was a star.
fn range(expr: &str, b: &Bounds, star_max: u32) -> Result<(u64, bool), String> {
    let (range, step) = match expr.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (expr, None),
    };
    let low_high: Vec<&str> = range.split('-').collect();
    let mut star = false;
    let single = low_high.len() == 1;
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        star = true;
        (b.min, star_max)
    } else {
        let start = value(low_high[0], b)?;
        let end = match low_high.len() {
            1 => start,
            2 => value(low_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match step {
        None => 1,
        Some(s) => {
            let step = s.parse::<u32>().map_err(|_| {
                format!("failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax")
            })?;
            if single && !star {
                end = star_max; // "N/step" means "N-max/step"
            }
            if step > 1 {
                star = false;
            }
            step
        }
    };
    if expr.matches('/').count() > 1 {
        return Err(format!("too many slashes: {expr}"));
    }
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok((bits, star))
}

fn field(expr: &str, b: &Bounds, star_max: u32) -> Result<(u64, bool), String> {
    let mut bits = 0;
    let mut star = false;
    for part in expr.split(',') {
        let (b2, s) = range(part, b, star_max)?;
        bits |= b2;
        star |= s;
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parse a standard spec (five fields or a macro), read in UTC.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(format!("unrecognized descriptor: {s}")),
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {spec}",
                fields.len()
            ));
        }
        let num = |min, max| Bounds {
            min,
            max,
            names: &[],
            name_base: 0,
        };
        let (minute, _) = field(fields[0], &num(0, 59), 59)?;
        let (hour, _) = field(fields[1], &num(0, 23), 23)?;
        let (dom, dom_star) = field(fields[2], &num(1, 31), 31)?;
        let (month, _) = field(
            fields[3],
            &Bounds {
                min: 1,
                max: 12,
                names: &MONTHS,
                name_base: 1,
            },
            12,
        )?;
        // 7 is Sunday too; `*` and `N/step` stop at Saturday.
        let (mut dow, dow_star) = field(
            fields[4],
            &Bounds {
                min: 0,
                max: 7,
                names: &DAYS,
                name_base: 0,
            },
            6,
        )?;
        if dow & (1 << 7) != 0 {
            dow = (dow & !(1 << 7)) | 1;
        }
        Ok(Self {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
            offset: 0,
        })
    }

    /// The same schedule read `offset` seconds east of UTC.
    pub fn with_offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    fn day_matches(&self, y: i64, m: u32, d: u32) -> bool {
        let dom = self.dom & (1 << d) != 0;
        let weekday = (days_from_civil(y, m, d) + 4).rem_euclid(7);
        let dow = self.dow & (1 << weekday) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time strictly after `t` (whole minutes), or `None` when the
    /// schedule never fires (e.g. "0 0 30 2 *").
    pub fn next(&self, t: i64) -> Option<i64> {
        let local = t + self.offset;
        let mut c = Civil::of(local.div_euclid(60) * 60 + 60);
        let limit = c.y + SEARCH_YEARS;
        while c.y <= limit {
            if self.month & (1 << c.mo) == 0 {
                c.next_month();
            } else if !self.day_matches(c.y, c.mo, c.d) {
                c.next_day();
            } else if self.hour & (1 << c.h) == 0 {
                c.next_hour();
            } else if self.minute & (1 << c.mi) == 0 {
                c.mi += 1;
                if c.mi == 60 {
                    c.next_hour();
                }
            } else {
                return Some(c.unix() - self.offset);
            }
        }
        None
    }

    /// The last time at or before `t`, or `None` when there is none in the
    /// search window.
    pub fn prev(&self, t: i64) -> Option<i64> {
        let local = t + self.offset;
        let mut c = Civil::of(local.div_euclid(60) * 60);
        let limit = c.y - SEARCH_YEARS;
        while c.y >= limit {
            if self.month & (1 << c.mo) == 0 {
                c.prev_month_end();
            } else if !self.day_matches(c.y, c.mo, c.d) {
                c.prev_day_end();
            } else if self.hour & (1 << c.h) == 0 {
                c.prev_hour_end();
            } else if self.minute & (1 << c.mi) == 0 {
                if c.mi == 0 {
                    c.prev_hour_end();
                } else {
                    c.mi -= 1;
                }
            } else {
                return Some(c.unix() - self.offset);
            }
        }
        None
    }
}

/// A wall-clock minute.
#[derive(Debug, Clone, Copy)]
struct Civil {
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)) as u32
}

impl Civil {
    fn of(t: i64) -> Self {
        let days = t.div_euclid(86_400);
        let s = t.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        Self {
            y,
            mo,
            d,
            h: (s / 3600) as u32,
            mi: (s % 3600 / 60) as u32,
        }
    }
    fn unix(&self) -> i64 {
        days_from_civil(self.y, self.mo, self.d) * 86_400 + i64::from(self.h * 3600 + self.mi * 60)
    }
    fn next_month(&mut self) {
        (self.mo, self.d, self.h, self.mi) = (self.mo + 1, 1, 0, 0);
        if self.mo == 13 {
            (self.y, self.mo) = (self.y + 1, 1);
        }
    }
    fn next_day(&mut self) {
        if self.d == days_in_month(self.y, self.mo) {
            self.next_month();
        } else {
            (self.d, self.h, self.mi) = (self.d + 1, 0, 0);
        }
    }
    fn next_hour(&mut self) {
        if self.h == 23 {
            self.next_day();
        } else {
            (self.h, self.mi) = (self.h + 1, 0);
        }
    }
    fn prev_month_end(&mut self) {
        if self.mo == 1 {
            (self.y, self.mo) = (self.y - 1, 12);
        } else {
            self.mo -= 1;
        }
        (self.d, self.h, self.mi) = (days_in_month(self.y, self.mo), 23, 59);
    }
    fn prev_day_end(&mut self) {
        if self.d == 1 {
            self.prev_month_end();
        } else {
            (self.d, self.h, self.mi) = (self.d - 1, 23, 59);
        }
    }
    fn prev_hour_end(&mut self) {
        if self.h == 0 {
            self.prev_day_end();
        } else {
            (self.h, self.mi) = (self.h - 1, 59);
        }
    }
}

/// Seconds east of UTC of a time zone name, for the zones that are a fixed
/// offset: UTC and its aliases, and `Etc/GMT±N` (whose sign is POSIX's:
/// `Etc/GMT+5` is five hours *west*). Others (which need the tz database)
/// are `None`.
pub fn zone_offset(zone: &str) -> Option<i64> {
    const UTC: &[&str] = &[
        "",
        "UTC",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Etc/Universal",
        "Universal",
        "Etc/Zulu",
        "Zulu",
        "GMT",
        "Etc/GMT",
        "GMT0",
        "GMT+0",
        "GMT-0",
        "Etc/GMT0",
        "Etc/GMT+0",
        "Etc/GMT-0",
        "Greenwich",
        "Etc/Greenwich",
    ];
    if UTC.contains(&zone) {
        return Some(0);
    }
    let rest = zone.strip_prefix("Etc/GMT")?;
    let (sign, hours) = match rest.split_at_checked(1)? {
        ("+", h) => (-1, h),
        ("-", h) => (1, h),
        _ => return None,
    };
    let hours: i64 = hours
        .parse()
        .ok()
        .filter(|h: &i64| (1..=14).contains(h) && hours.len() <= 2)?;
    if sign == -1 && hours > 12 {
        return None;
    }
    Some(sign * hours * 3600)
}

/// RFC 3339 of `t` at `offset` seconds east of UTC ("Z" for UTC), as Go's
/// `time.RFC3339` formats it.
pub fn rfc3339_at(t: i64, offset: i64) -> String {
    let text = trellis_sdk::objects::rfc3339(t + offset);
    if offset == 0 {
        return text;
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.abs();
    format!(
        "{}{sign}{:02}:{:02}",
        &text[..text.len() - 1],
        a / 3600,
        a % 3600 / 60
    )
}

/// Go's `time.RFC1123Z` ("Mon, 02 Jan 2006 15:04:05 -0700") of `t` in UTC.
pub fn rfc1123z(t: i64) -> String {
    let c = Civil::of(t);
    let weekday = (t.div_euclid(86_400) + 4).rem_euclid(7) as usize;
    let day = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][weekday];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][c.mo as usize - 1];
    format!(
        "{day}, {:02} {month} {} {:02}:{:02}:{:02} +0000",
        c.d,
        c.y,
        c.h,
        c.mi,
        t.rem_euclid(60)
    )
}

/// Unix seconds of an RFC 3339 UTC timestamp.
#[cfg(test)]
pub fn at(s: &str) -> i64 {
    trellis_sdk::objects::parse_rfc3339(s).unwrap_or_else(|| panic!("not a timestamp: {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_sdk::objects::rfc3339;

    fn next(spec: &str, from: &str) -> String {
        let s = Schedule::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        s.next(at(from))
            .map(rfc3339)
            .unwrap_or_else(|| "never".into())
    }

    #[test]
    fn next_times() {
        // (spec, from, next) — from is a Friday, 2024-03-15 10:07:30 UTC
        let from = "2024-03-15T10:07:30Z";
        let table = [
            ("* * * * *", "2024-03-15T10:08:00Z"),
            ("*/5 * * * *", "2024-03-15T10:10:00Z"),
            ("7 * * * *", "2024-03-15T11:07:00Z"),
            ("0 * * * *", "2024-03-15T11:00:00Z"),
            ("30 9 * * *", "2024-03-16T09:30:00Z"),
            ("0 0 1 * *", "2024-04-01T00:00:00Z"),
            ("0 0 1 1 *", "2025-01-01T00:00:00Z"),
            ("1-10/2 * * * *", "2024-03-15T10:09:00Z"),
            ("5,20,40 10 * * *", "2024-03-15T10:20:00Z"),
            ("15/20 * * * *", "2024-03-15T10:15:00Z"),
            ("0 12 * * MON-FRI", "2024-03-15T12:00:00Z"),
            ("0 9 * * mon", "2024-03-18T09:00:00Z"),
            ("0 9 * * 0", "2024-03-17T09:00:00Z"),
            ("0 9 * * 7", "2024-03-17T09:00:00Z"),
            ("0 9 * * sun", "2024-03-17T09:00:00Z"),
            ("0 9 * * 5-7", "2024-03-16T09:00:00Z"),
            ("0 0 * JUN *", "2024-06-01T00:00:00Z"),
            ("0 0 1 jan,jul *", "2024-07-01T00:00:00Z"),
            ("0 0 29 2 *", "2028-02-29T00:00:00Z"),
            ("0 0 31 * *", "2024-03-31T00:00:00Z"),
            ("0 0 30 2 *", "never"),
            // both day fields restricted: either matches (the 20th, or a Monday)
            ("0 0 20 * 1", "2024-03-18T00:00:00Z"),
            ("0 0 16 * 1", "2024-03-16T00:00:00Z"),
            // a starred day-of-month field: both must match
            ("0 0 * * 1", "2024-03-18T00:00:00Z"),
            ("0 0 ? * 1", "2024-03-18T00:00:00Z"),
            // a stepped star is no star: OR again (the 17th is odd, Sunday)
            ("0 0 */2 * 0", "2024-03-17T00:00:00Z"),
            ("0 0 1 * */2", "2024-03-16T00:00:00Z"),
            ("59 23 31 12 *", "2024-12-31T23:59:00Z"),
            ("@hourly", "2024-03-15T11:00:00Z"),
            ("@daily", "2024-03-16T00:00:00Z"),
            ("@midnight", "2024-03-16T00:00:00Z"),
            ("@weekly", "2024-03-17T00:00:00Z"),
            ("@monthly", "2024-04-01T00:00:00Z"),
            ("@yearly", "2025-01-01T00:00:00Z"),
            ("@annually", "2025-01-01T00:00:00Z"),
        ];
        for (spec, want) in table {
            assert_eq!(next(spec, from), want, "{spec}");
        }
        // exactly on a schedule time: the next one
        assert_eq!(
            next("*/15 * * * *", "2024-03-15T10:15:00Z"),
            "2024-03-15T10:30:00Z"
        );
        assert_eq!(
            next("0 0 * * *", "2024-12-31T23:59:59Z"),
            "2025-01-01T00:00:00Z"
        );
    }

    #[test]
    fn previous_times() {
        let prev = |spec: &str, t: &str| Schedule::parse(spec).unwrap().prev(at(t)).map(rfc3339);
        assert_eq!(
            prev("*/5 * * * *", "2024-03-15T10:07:30Z").unwrap(),
            "2024-03-15T10:05:00Z"
        );
        assert_eq!(
            prev("*/5 * * * *", "2024-03-15T10:05:00Z").unwrap(),
            "2024-03-15T10:05:00Z"
        );
        assert_eq!(
            prev("0 9 * * 1-5", "2024-03-17T12:00:00Z").unwrap(),
            "2024-03-15T09:00:00Z"
        );
        assert_eq!(
            prev("@yearly", "2024-03-15T10:07:30Z").unwrap(),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            prev("0 0 29 2 *", "2027-03-01T00:00:00Z").unwrap(),
            "2024-02-29T00:00:00Z"
        );
        assert_eq!(prev("0 0 30 2 *", "2027-03-01T00:00:00Z"), None);
    }

    #[test]
    fn offsets() {
        let s = Schedule::parse("0 9 * * *")
            .unwrap()
            .with_offset(zone_offset("Etc/GMT-2").unwrap());
        assert_eq!(
            rfc3339(s.next(at("2024-03-15T10:00:00Z")).unwrap()),
            "2024-03-16T07:00:00Z"
        );
        assert_eq!(zone_offset("Etc/GMT+5"), Some(-5 * 3600));
        assert_eq!(zone_offset("Etc/UTC"), Some(0));
        assert_eq!(zone_offset("Europe/Berlin"), None);
        assert_eq!(zone_offset("Etc/GMT+13"), None);
        assert_eq!(
            rfc3339_at(at("2024-03-16T07:00:00Z"), 7200),
            "2024-03-16T09:00:00+02:00"
        );
        assert_eq!(
            rfc3339_at(at("2024-03-16T07:00:00Z"), -18000),
            "2024-03-16T02:00:00-05:00"
        );
        assert_eq!(
            rfc1123z(at("2024-03-15T10:07:30Z")),
            "Fri, 15 Mar 2024 10:07:30 +0000"
        );
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * 32 * *",
            "* * * 13 *",
            "* * * * 8",
            "5-1 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "1-2-3 * * * *",
            "* * * foo *",
            "@every 5m",
            "@reboot",
            "1/2/3 * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(
            Schedule::parse("* * * *").unwrap_err(),
            "expected exactly 5 fields, found 4: * * * *"
        );
    }
}
