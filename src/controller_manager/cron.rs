//! Cron schedules, as the cronjob controller reads `spec.schedule` (the semantics of
//! `github.com/robfig/cron/v3`'s `ParseStandard`, which kube-controller-manager uses).
//!
//! A schedule is five fields — minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
//! `JAN`-`DEC`) and day of week (0-6 or `SUN`-`SAT`) — each a `*` (or `?`), a number, a range
//! `a-b`, a step `*/n`, `a/n` or `a-b/n`, or a comma-separated list of those. When both the day
//! of month and the day of week are restricted (neither starts with `*`), a day matching either
//! one matches; otherwise both must match. The macros `@yearly` (`@annually`), `@monthly`,
//! `@weekly`, `@daily` (`@midnight`) and `@hourly` stand for their usual five fields, and
//! `@every 1h30m` runs at a fixed interval. A `CRON_TZ=<zone>` or `TZ=<zone>` prefix sets the
//! time zone the fields are read in (the cronjob controller adds `TZ=<spec.timeZone>` itself).
//!
//! [`Schedule::next`] finds the first matching minute strictly after an instant. The fields
//! are wall-clock times in the schedule's zone: a time skipped by a daylight-saving jump does
//! not happen that day, and a time that happens twice (clocks set back) matches twice — as with
//! the real controller.

use std::time::Duration;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    tz: TimeZone,
}

#[derive(Debug, Clone)]
enum Kind {
    Fields(Fields),
    Every(Duration),
}

/// Bit sets of the allowed values of each field; `*_star` records a leading `*`/`?` (which
/// makes the day-of-month/day-of-week rule an AND instead of an OR).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// How far ahead [`Schedule::next`] looks before giving up (robfig/cron: five years).
const SEARCH_YEARS: i16 = 5;

impl Schedule {
    /// Parses a standard (five-field) schedule, read in UTC unless it starts with
    /// `CRON_TZ=`/`TZ=`. Errors read like robfig/cron's.
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        Schedule::parse_in(spec, TimeZone::UTC)
    }

    /// Parses a schedule whose fields are read in `tz` unless it names its own zone.
    pub fn parse_in(spec: &str, tz: TimeZone) -> Result<Schedule, String> {
        let mut spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let mut tz = tz;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let eq = spec.find('=').unwrap_or(0);
            let end = spec.find(char::is_whitespace).unwrap_or(spec.len());
            let name = &spec[eq + 1..end];
            tz = load_location(name).map_err(|e| format!("provided bad location {name}: {e}"))?;
            spec = spec[end..].trim();
        }
        let kind = if let Some(rest) = spec.strip_prefix('@') {
            Kind::from_descriptor(rest, spec)?
        } else {
            let fields: Vec<&str> = spec.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(format!(
                    "expected exactly 5 fields, found {}: [{}]",
                    fields.len(),
                    fields.join(" ")
                ));
            }
            let (minute, _) = field(fields[0], &MINUTES)?;
            let (hour, _) = field(fields[1], &HOURS)?;
            let (dom, dom_star) = field(fields[2], &DOM)?;
            let (month, _) = field(fields[3], &MONTHS)?;
            let (dow, dow_star) = field(fields[4], &DOW)?;
            Kind::Fields(Fields {
                minute,
                hour,
                dom,
                month,
                dow,
                dom_star,
                dow_star,
            })
        };
        Ok(Schedule { kind, tz })
    }

    /// The zone the fields are read in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The first time the schedule fires strictly after `after`; None when it never does
    /// within five years (e.g. `0 0 30 2 *`).
    pub fn next(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(d) => {
                // Whole seconds past the start of `after`'s second, as robfig's ConstantDelaySchedule.
                let base = Timestamp::from_second(after.as_second()).ok()?;
                base.checked_add(jiff::SignedDuration::try_from(*d).ok()?)
                    .ok()
            }
            Kind::Fields(f) => self.next_fields(f, after),
        }
    }

    fn next_fields(&self, f: &Fields, after: Timestamp) -> Option<Timestamp> {
        // Wall-clock candidates start a little before `after`'s wall-clock time: when clocks
        // were set back, a wall-clock time earlier than `after`'s may happen again after it.
        let start = after
            .checked_sub(3.hours())
            .ok()?
            .to_zoned(self.tz.clone())
            .datetime();
        let start = start.with().second(0).subsec_nanosecond(0).build().ok()?;
        let mut best: Option<Timestamp> = None;
        let mut date = start.date();
        let last = date.checked_add((SEARCH_YEARS as i64).years()).ok()?;
        while date <= last {
            if f.month & (1 << date.month()) == 0 {
                // Skip to the first day of the next month.
                date = date.first_of_month().checked_add(1.month()).ok()?;
                continue;
            }
            if day_matches(f, date) {
                for h in 0..24i8 {
                    if f.hour & (1 << h) == 0 {
                        continue;
                    }
                    for m in 0..60i8 {
                        if f.minute & (1 << m) == 0 {
                            continue;
                        }
                        let dt = date.at(h, m, 0, 0);
                        if dt < start {
                            continue;
                        }
                        let (earliest, later) = instants(&self.tz, dt);
                        let Some(earliest) = earliest else {
                            continue; // skipped by a daylight-saving jump
                        };
                        if best.is_some_and(|b| earliest > b) {
                            // Later wall-clock times are never earlier instants.
                            return best;
                        }
                        for t in [Some(earliest), later].into_iter().flatten() {
                            if t > after && best.is_none_or(|b| t < b) {
                                best = Some(t);
                            }
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        best
    }
}

impl Kind {
    fn from_descriptor(name: &str, spec: &str) -> Result<Kind, String> {
        let five = |s: &str| match Schedule::parse(s)?.kind {
            k @ Kind::Fields(_) => Ok(k),
            Kind::Every(_) => Err("unreachable".to_string()),
        };
        match name {
            "yearly" | "annually" => five("0 0 1 1 *"),
            "monthly" => five("0 0 1 * *"),
            "weekly" => five("0 0 * * 0"),
            "daily" | "midnight" => five("0 0 * * *"),
            "hourly" => five("0 * * * *"),
            _ => {
                if let Some(d) = name.strip_prefix("every ") {
                    let d = crate::cluster::config::parse_duration(d.trim())
                        .map_err(|e| format!("failed to parse duration {spec}: {e}"))?;
                    // robfig rounds the interval down to a whole second, at least one.
                    let secs = d.as_secs().max(1);
                    return Ok(Kind::Every(Duration::from_secs(secs)));
                }
                Err(format!("unrecognized descriptor: {spec}"))
            }
        }
    }
}

/// The instants a wall-clock time names in `tz`: (the earlier, the later when it happens twice);
/// (None, None) when it is skipped.
fn instants(tz: &TimeZone, dt: DateTime) -> (Option<Timestamp>, Option<Timestamp>) {
    let amb = tz.to_ambiguous_timestamp(dt);
    match amb.offset() {
        AmbiguousOffset::Unambiguous { offset } => (offset.to_timestamp(dt).ok(), None),
        AmbiguousOffset::Gap { .. } => (None, None),
        AmbiguousOffset::Fold { before, after } => {
            let a = before.to_timestamp(dt).ok();
            let b = after.to_timestamp(dt).ok();
            match (a, b) {
                (Some(a), Some(b)) if b < a => (Some(b), Some(a)),
                (a, b) => (a, b),
            }
        }
    }
}

fn day_matches(f: &Fields, d: Date) -> bool {
    let dom = f.dom & (1 << d.day()) != 0;
    let dow = f.dow & (1 << d.weekday().to_sunday_zero_offset()) != 0;
    if f.dom_star || f.dow_star {
        dom && dow
    } else {
        dom || dow
    }
}

/// An IANA time zone, as Go's `time.LoadLocation` finds it (the system's zoneinfo).
pub fn load_location(name: &str) -> Result<TimeZone, String> {
    match name {
        "" | "UTC" => Ok(TimeZone::UTC),
        "Local" => Ok(TimeZone::UTC),
        _ => TimeZone::get(name).map_err(|_| format!("unknown time zone {name}")),
    }
}

/// One field: its bit set and whether it starts with `*`/`?`.
fn field(text: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (r, s) = range(part, b)?;
        bits |= r;
        star |= s;
    }
    Ok((bits, star))
}

fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let slash: Vec<&str> = expr.split('/').collect();
    let hyphen: Vec<&str> = slash[0].split('-').collect();
    let single = hyphen.len() == 1;
    let (start, mut end, mut star);
    if hyphen[0] == "*" || hyphen[0] == "?" {
        (start, end, star) = (b.min, b.max, true);
    } else {
        star = false;
        start = value(hyphen[0], b)?;
        end = match hyphen.len() {
            1 => start,
            2 => value(hyphen[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
    }
    let step = match slash.len() {
        1 => 1,
        2 => {
            let s = number(slash[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = b.max;
            }
            if s > 1 {
                star = false;
            }
            s
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
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

fn value(s: &str, b: &Bounds) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    number(s)
}

fn number(s: &str) -> Result<u32, String> {
    let n: i64 = s.parse().map_err(|_| {
        format!("failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax")
    })?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {s}"));
    }
    u32::try_from(n.min(64)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn nexts(spec: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(spec).expect("parses");
        let mut t = ts(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next(t).expect("a next time");
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn every_minute_and_steps() {
        assert_eq!(
            nexts("* * * * *", "2024-01-01T00:00:00Z", 2),
            ["2024-01-01T00:01:00Z", "2024-01-01T00:02:00Z"]
        );
        // Strictly after: from 00:00:30 the next is 00:01.
        assert_eq!(
            nexts("* * * * *", "2024-01-01T00:00:30Z", 1),
            ["2024-01-01T00:01:00Z"]
        );
        assert_eq!(
            nexts("*/15 * * * *", "2024-01-01T00:07:00Z", 3),
            [
                "2024-01-01T00:15:00Z",
                "2024-01-01T00:30:00Z",
                "2024-01-01T00:45:00Z"
            ]
        );
        assert_eq!(
            nexts("5/20 9-10 * * *", "2024-01-01T09:30:00Z", 3),
            [
                "2024-01-01T09:45:00Z",
                "2024-01-01T10:05:00Z",
                "2024-01-01T10:25:00Z"
            ]
        );
        assert_eq!(
            nexts("0 0,12 * * *", "2024-01-01T00:00:00Z", 2),
            ["2024-01-01T12:00:00Z", "2024-01-02T00:00:00Z"]
        );
    }

    #[test]
    fn names_and_macros() {
        // 2024-01-01 is a Monday.
        assert_eq!(
            nexts("30 8 * * MON-fri", "2024-01-05T09:00:00Z", 2),
            ["2024-01-08T08:30:00Z", "2024-01-09T08:30:00Z"]
        );
        assert_eq!(
            nexts("0 0 1 jan,JUL *", "2024-02-01T00:00:00Z", 2),
            ["2024-07-01T00:00:00Z", "2025-01-01T00:00:00Z"]
        );
        assert_eq!(
            nexts("@hourly", "2024-01-01T10:10:00Z", 1),
            ["2024-01-01T11:00:00Z"]
        );
        assert_eq!(
            nexts("@daily", "2024-01-01T10:10:00Z", 1),
            ["2024-01-02T00:00:00Z"]
        );
        assert_eq!(
            nexts("@midnight", "2024-01-01T10:10:00Z", 1),
            ["2024-01-02T00:00:00Z"]
        );
        assert_eq!(
            nexts("@weekly", "2024-01-01T10:10:00Z", 1),
            ["2024-01-07T00:00:00Z"]
        );
        assert_eq!(
            nexts("@monthly", "2024-01-31T10:10:00Z", 1),
            ["2024-02-01T00:00:00Z"]
        );
        assert_eq!(
            nexts("@yearly", "2024-01-01T00:00:00Z", 1),
            ["2025-01-01T00:00:00Z"]
        );
        assert_eq!(
            nexts("@annually", "2024-06-01T00:00:00Z", 1),
            ["2025-01-01T00:00:00Z"]
        );
        assert_eq!(
            nexts("@every 90s", "2024-01-01T00:00:00.5Z", 1),
            ["2024-01-01T00:01:30Z"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Both restricted: either matches (the 13th, or any Friday).
        assert_eq!(
            nexts("0 0 13 * 5", "2024-09-01T00:00:00Z", 3),
            [
                "2024-09-06T00:00:00Z",
                "2024-09-13T00:00:00Z",
                "2024-09-20T00:00:00Z"
            ]
        );
        // Day of week a star: day of month alone.
        assert_eq!(
            nexts("0 0 13 * *", "2024-09-01T00:00:00Z", 1),
            ["2024-09-13T00:00:00Z"]
        );
        // Leap day.
        assert_eq!(
            nexts("0 0 29 2 *", "2024-03-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
        // Never.
        assert!(
            Schedule::parse("0 0 30 2 *")
                .unwrap()
                .next(ts("2024-01-01T00:00:00Z"))
                .is_none()
        );
    }

    #[test]
    fn bad_specs() {
        for (spec, err) in [
            ("* * * *", "expected exactly 5 fields, found 4"),
            ("60 * * * *", "end of range (60) above maximum (59)"),
            ("* * 0 * *", "beginning of range (0) below minimum (1)"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1)",
            ),
            ("*/0 * * * *", "step of range should be a positive number"),
            ("x * * * *", "failed to parse int from x"),
            ("@fortnightly", "unrecognized descriptor: @fortnightly"),
            (
                "TZ=Mars/Olympus * * * * *",
                "provided bad location Mars/Olympus",
            ),
            ("", "empty spec string"),
        ] {
            let e = Schedule::parse(spec).expect_err(spec);
            assert!(e.contains(err), "{spec}: {e}");
        }
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 09:00 in New York is 14:00 UTC in winter, 13:00 in summer.
        let s = Schedule::parse("CRON_TZ=America/New_York 0 9 * * *").unwrap();
        assert_eq!(
            s.next(ts("2024-01-10T00:00:00Z")).unwrap().to_string(),
            "2024-01-10T14:00:00Z"
        );
        assert_eq!(
            s.next(ts("2024-07-10T00:00:00Z")).unwrap().to_string(),
            "2024-07-10T13:00:00Z"
        );
        let ny = load_location("America/New_York").unwrap();
        let s = Schedule::parse_in("30 2 * * *", ny.clone()).unwrap();
        // 2024-03-10 02:30 does not exist in New York (clocks jump 02:00 → 03:00): that day
        // is skipped.
        assert_eq!(
            s.next(ts("2024-03-10T05:00:00Z")).unwrap().to_string(),
            "2024-03-11T06:30:00Z"
        );
        // 2024-11-03 01:30 happens twice (EDT, then EST): both fire.
        let s = Schedule::parse_in("30 1 * * *", ny).unwrap();
        let first = s.next(ts("2024-11-03T04:00:00Z")).unwrap();
        assert_eq!(first.to_string(), "2024-11-03T05:30:00Z");
        let second = s.next(first).unwrap();
        assert_eq!(second.to_string(), "2024-11-03T06:30:00Z");
        assert_eq!(s.next(second).unwrap().to_string(), "2024-11-04T06:30:00Z");
        // TZ= works as CRON_TZ=.
        let s = Schedule::parse("TZ=Asia/Kolkata 0 0 * * *").unwrap();
        assert_eq!(
            s.next(ts("2024-01-01T00:00:00Z")).unwrap().to_string(),
            "2024-01-01T18:30:00Z"
        );
        assert!(load_location("Not/AZone").is_err());
    }
}
