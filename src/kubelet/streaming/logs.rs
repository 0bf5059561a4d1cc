//! Container logs: `GET /containerLogs/{namespace}/{pod}/{container}`.
//!
//! The query is the API's PodLogOptions: `follow`, `tailLines`, `timestamps`, `previous`,
//! `sinceSeconds`, `sinceTime` (RFC 3339), `limitBytes`. The engine's log API does the reading
//! (stdout and stderr interleaved as written; with `timestamps` each line starts with the
//! RFC 3339 nanosecond time and a space, the kubelet's format); `limitBytes` is applied here,
//! cutting the stream after that many bytes, as the kubelet does.

use std::pin::Pin;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// PodLogOptions, as the kubelet reads them from the query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<i64>,
    pub timestamps: bool,
    pub previous: bool,
    pub since_seconds: Option<i64>,
    /// Unix seconds of `sinceTime`.
    pub since_time: Option<i64>,
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Parses the query; a malformed value is an error worded as the API server's.
    pub fn from_query(q: &[(String, String)]) -> Result<LogOptions, String> {
        let mut o = LogOptions::default();
        let boolean = |k: &str, v: &str| match v {
            "" | "1" | "true" | "True" => Ok(true),
            "0" | "false" | "False" => Ok(false),
            _ => Err(format!("{k}: invalid value {v:?}: must be a boolean")),
        };
        let int = |k: &str, v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("{k}: invalid value {v:?}: must be an integer"))
        };
        for (k, v) in q {
            match k.as_str() {
                "follow" => o.follow = boolean(k, v)?,
                "timestamps" => o.timestamps = boolean(k, v)?,
                "previous" => o.previous = boolean(k, v)?,
                "tailLines" => {
                    let n = int(k, v)?;
                    if n < 0 {
                        return Err(
                            "tailLines: Invalid value: must be greater than or equal to 0"
                                .to_string(),
                        );
                    }
                    o.tail_lines = Some(n);
                }
                "sinceSeconds" => {
                    let n = int(k, v)?;
                    if n < 1 {
                        return Err(
                            "sinceSeconds: Invalid value: must be greater than 0".to_string()
                        );
                    }
                    o.since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t: jiff::Timestamp = v
                        .parse()
                        .map_err(|_| format!("sinceTime: invalid value {v:?}: not RFC 3339"))?;
                    o.since_time = Some(t.as_second());
                }
                "limitBytes" => {
                    let n = int(k, v)?;
                    if n < 1 {
                        return Err("limitBytes: Invalid value: must be greater than 0".to_string());
                    }
                    o.limit_bytes = Some(n as u64);
                }
                _ => {}
            }
        }
        if o.since_seconds.is_some() && o.since_time.is_some() {
            return Err("at most one of sinceTime or sinceSeconds may be specified".to_string());
        }
        Ok(o)
    }

    /// The engine's options for these.
    fn docker(&self) -> LogsOptions {
        let since = match (self.since_seconds, self.since_time) {
            (Some(s), _) => jiff::Timestamp::now().as_second() - s,
            (None, Some(t)) => t,
            (None, None) => 0,
        };
        LogsOptions {
            follow: self.follow,
            stdout: true,
            stderr: true,
            since: i32::try_from(since.max(0)).unwrap_or(i32::MAX),
            until: 0,
            timestamps: self.timestamps,
            tail: match self.tail_lines {
                Some(n) => n.to_string(),
                None => "all".to_string(),
            },
        }
    }
}

/// The log of container `id` as a byte stream (ends at the end of the log, or with `follow`
/// when the container stops, or after `limitBytes`).
pub fn stream(
    docker: &Docker,
    id: &str,
    opts: &LogOptions,
) -> Pin<Box<dyn Stream<Item = Bytes> + Send>> {
    let raw = docker
        .logs(id, Some(opts.docker()))
        .filter_map(|item| async move {
            match item {
                Ok(
                    LogOutput::StdOut { message }
                    | LogOutput::StdErr { message }
                    | LogOutput::Console { message },
                ) => Some(message),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => {
                    tracing::debug!("logs: {e}");
                    None
                }
            }
        });
    match opts.limit_bytes {
        None => Box::pin(raw),
        Some(limit) => Box::pin(limit_bytes(raw, limit)),
    }
}

/// Passes at most `limit` bytes of `s`, then ends.
pub fn limit_bytes(
    s: impl Stream<Item = Bytes> + Send + 'static,
    limit: u64,
) -> impl Stream<Item = Bytes> + Send {
    futures_util::stream::unfold((Box::pin(s), limit), |(mut s, left)| async move {
        if left == 0 {
            return None;
        }
        let chunk = s.next().await?;
        let take = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        Some((chunk.slice(..take), (s, left - take as u64)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_parse_and_refuse_bad_values() {
        let o = LogOptions::from_query(&q(&[
            ("follow", "true"),
            ("tailLines", "5"),
            ("timestamps", "true"),
            ("limitBytes", "100"),
            ("sinceTime", "2026-01-02T03:04:05Z"),
        ]))
        .expect("valid");
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(100)));
        assert_eq!(o.since_time, Some(1_767_323_045));
        assert_eq!(o.docker().tail, "5");
        for bad in [
            ("tailLines", "x"),
            ("tailLines", "-1"),
            ("limitBytes", "0"),
            ("follow", "maybe"),
            ("sinceTime", "yesterday"),
        ] {
            assert!(LogOptions::from_query(&q(&[bad])).is_err(), "{bad:?}");
        }
        assert!(
            LogOptions::from_query(&q(&[
                ("sinceSeconds", "5"),
                ("sinceTime", "2026-01-02T03:04:05Z")
            ]))
            .is_err()
        );
    }

    #[tokio::test]
    async fn limit_bytes_cuts_the_stream() {
        let s = futures_util::stream::iter(vec![
            Bytes::from_static(b"hello\n"),
            Bytes::from_static(b"world\n"),
        ]);
        let got: Vec<Bytes> = limit_bytes(s, 8).collect().await;
        assert_eq!(got.concat(), b"hello\nwo");
    }
}
