//! The settlement of one delivery, without I/O: which request to send next (which items,
//! which host), what each answer decides for every item (indexed, duplicate, retry,
//! rejected), and whether to send again, back off, or stop. Knows nothing of HTTP
//! clients, clocks, metrics handles or logs: the writer sends, sleeps and records.

use std::collections::VecDeque;
use std::time::Duration;

use super::bulk::{self, Item, ItemResult, Outcome, Reply, RequestOutcome};
use super::transport::{Response, SendError};
use crate::metrics::BulkOutcome;

/// The limits a settlement works within (from the output's settings).
#[derive(Debug, Clone)]
pub struct Policy {
    /// A request's body at most (`bulk_max_bytes`); a 413 halves it for the rest of the
    /// settlement, never below one item.
    pub max_bytes: usize,
    /// The first retry's wait (`retry_initial_backoff`), doubled per attempt up to
    /// `max_backoff` (`retry_max_backoff`), with jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The hosts requests go round, by index.
    pub hosts: usize,
}

/// The next request: these items, in this order, to this host.
#[derive(Debug)]
pub struct Request<'a> {
    pub host: usize,
    pub items: &'a [Item],
}

impl Request<'_> {
    /// The `_bulk` body, written into `body` (a spare one kept from an earlier request).
    pub fn body_into(&self, body: &mut Vec<u8>) {
        bulk::encode_into(self.items, body)
    }
}

/// An item refused for good, with the answer that refused it: it becomes a dead letter.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub item: Item,
    pub status: u16,
    /// `error.type`, or `http_<status>` for a request refused as a whole.
    pub kind: String,
    pub reason: String,
}

/// Why items were not stored on an attempt: shown in the retry log line and as the
/// reason the output is down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// No answer: the request or its answer did not get through.
    #[error(transparent)]
    Unanswered(#[from] SendError),
    /// 200 with a body that is not a bulk answer.
    #[error("unreadable bulk answer: {0}")]
    Unreadable(String),
    /// 200 with a different number of items than were sent: which is which is unknown.
    #[error("bulk answer has {got} items for {sent} sent")]
    ItemCount { got: usize, sent: usize },
    /// The whole request refused (429, 5xx, 401/403, ...), with the start of the body.
    #[error("HTTP {status} {body}")]
    Refused { status: u16, body: String },
    /// The first item answered 429 or 5xx, with its `error.type: error.reason`.
    #[error("HTTP {status} {reason}")]
    Item { status: u16, reason: String },
}

/// What an answer says about the output as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Elasticsearch answered the items: it is up.
    Up,
    /// It did not answer, or cannot write at all (5xx, 401/403): down, for this reason.
    Down(Fault),
}

/// A request refused as too large: its items go again in smaller requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halved {
    pub status: u16,
    pub items: usize,
}

/// What to do after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send the next request now.
    Again,
    /// `items` were not stored on attempt `attempt` (the first reason shown): wait,
    /// then send them again.
    Backoff {
        wait: Duration,
        attempt: u32,
        items: usize,
        reason: Fault,
    },
    /// Every item is indexed, a duplicate, or rejected.
    Done,
}

/// What one answer did, for the writer's metrics and logs, and what comes next.
#[derive(Debug)]
pub struct Report {
    /// The request, as `lumberd_bulk_requests_total` counts it.
    pub request: BulkOutcome,
    pub indexed: usize,
    pub duplicates: usize,
    /// Items refused for good by this answer (handed over by [`Settlement::finish`]).
    pub rejected: usize,
    pub health: Option<Signal>,
    pub halved: Option<Halved>,
    pub verdict: Verdict,
}

impl Report {
    fn of(request: BulkOutcome) -> Report {
        Report {
            request,
            indexed: 0,
            duplicates: 0,
            rejected: 0,
            health: None,
            halved: None,
            verdict: Verdict::Again,
        }
    }
}

/// Items to store, sent until each is settled: retries resend only the items that
/// failed, forever, with capped exponential backoff; a 413 halves the request; a host
/// that does not answer hands the request to the next one, and only when none has
/// answered does the settlement back off.
#[derive(Debug)]
pub struct Settlement {
    policy: Policy,
    /// Not yet sent, or to be sent again (those first, in their order).
    todo: VecDeque<Item>,
    /// The request awaiting its answer, taken from the front of `todo`, and its bytes.
    sent: Vec<Item>,
    sent_bytes: usize,
    rejected: Vec<Rejected>,
    /// The host of the next request; every request moves it on (round robin).
    host: usize,
    max_bytes: usize,
    /// Rounds in a row that left items to retry: the backoff's exponent.
    attempt: u32,
    /// Hosts in a row that gave no answer: failover until each has had its turn.
    unanswered: usize,
    jitter: fastrand::Rng,
}

impl Settlement {
    /// Starts with the request to host `first_host`; `seed` draws the jitter.
    pub fn new(items: Vec<Item>, policy: Policy, first_host: usize, seed: u64) -> Settlement {
        let hosts = policy.hosts.max(1);
        Settlement {
            todo: items.into(),
            sent: Vec::new(),
            sent_bytes: 0,
            rejected: Vec::new(),
            host: first_host % hosts,
            max_bytes: policy.max_bytes,
            attempt: 0,
            unanswered: 0,
            jitter: fastrand::Rng::with_seed(seed),
            policy: Policy { hosts, ..policy },
        }
    }

    /// The request to send, or `None` once every item is settled. Until it is answered,
    /// the same request.
    pub fn request(&mut self) -> Option<Request<'_>> {
        if self.sent.is_empty() {
            // A prefix of `todo` within the byte limit, and never less than one item.
            let (mut n, mut size) = (0, 0);
            while let Some(item) = self.todo.get(n) {
                let len = item.encoded_len();
                if n > 0 && size + len > self.max_bytes {
                    break;
                }
                size += len;
                n += 1;
            }
            if n == 0 {
                return None;
            }
            self.sent.extend(self.todo.drain(..n));
            self.sent_bytes = size;
        }
        Some(Request {
            host: self.host,
            items: &self.sent,
        })
    }

    /// The answer to the last [`request`](Self::request): an HTTP status and body, or
    /// why there was none.
    pub fn answer(&mut self, answer: Result<Response, SendError>) -> Report {
        assert!(!self.sent.is_empty(), "an answer without a request");
        let sent = std::mem::take(&mut self.sent);
        self.host = (self.host + 1) % self.policy.hosts;
        let reply = match answer {
            Ok(r) => bulk::read_reply(r.status, &r.body),
            Err(e) => return self.unanswered(sent, Fault::Unanswered(e)),
        };
        let answered = match &reply {
            Reply::Stored(n) => Some(*n),
            Reply::Items(results) => Some(results.len()),
            _ => None,
        };
        if let Some(got) = answered.filter(|&got| got != sent.len()) {
            self.unanswered = 0;
            let fault = Fault::ItemCount {
                got,
                sent: sent.len(),
            };
            return self.retry(Report::of(BulkOutcome::Retried), sent, fault);
        }
        // Any answer shows a host is there: failover starts afresh.
        match reply {
            Reply::Unreadable(e) => self.unanswered(sent, Fault::Unreadable(e)),
            // Every item stored, as `items` would have found one by one.
            Reply::Stored(_) => {
                self.unanswered = 0;
                let mut report = Report::of(BulkOutcome::Success);
                report.health = Some(Signal::Up);
                report.indexed = sent.len();
                self.settled(report)
            }
            Reply::Items(results) => {
                self.unanswered = 0;
                self.items(sent, results)
            }
            Reply::Refused {
                status,
                outcome: RequestOutcome::Split,
                body,
            } => {
                self.unanswered = 0;
                self.halve(sent, status, body)
            }
            Reply::Refused {
                status,
                outcome: RequestOutcome::Retry { down },
                body,
            } => {
                self.unanswered = 0;
                let fault = Fault::Refused { status, body };
                let mut report = Report::of(BulkOutcome::Retried);
                report.health = down.then(|| Signal::Down(fault.clone()));
                self.retry(report, sent, fault)
            }
        }
    }

    /// The items refused for good, once [`request`](Self::request) says there is
    /// nothing more to send.
    pub fn finish(self) -> Vec<Rejected> {
        debug_assert!(self.todo.is_empty() && self.sent.is_empty());
        self.rejected
    }

    /// Each item's own answer decides its fate.
    fn items(&mut self, sent: Vec<Item>, results: Vec<ItemResult>) -> Report {
        let mut report = Report::of(BulkOutcome::Success);
        report.health = Some(Signal::Up);
        let mut retry = Vec::new();
        let mut first: Option<Fault> = None;
        for (item, result) in sent.into_iter().zip(results) {
            match bulk::classify(result.status, item.id.is_some(), result.error.as_ref()) {
                Outcome::Indexed => report.indexed += 1,
                Outcome::Duplicate => report.duplicates += 1,
                Outcome::Retry { status, reason } => {
                    first.get_or_insert(Fault::Item { status, reason });
                    retry.push(item);
                }
                Outcome::Reject {
                    status,
                    kind,
                    reason,
                } => {
                    report.rejected += 1;
                    self.rejected.push(Rejected {
                        item,
                        status,
                        kind,
                        reason,
                    });
                }
            }
        }
        match first {
            Some(reason) => {
                report.request = BulkOutcome::Partial;
                self.retry(report, retry, reason)
            }
            None => self.settled(report),
        }
    }

    /// A request refused as a whole for its size (413) or form (400): in halves, and a
    /// single item refused so is rejected.
    fn halve(&mut self, sent: Vec<Item>, status: u16, body: String) -> Report {
        let mut report = Report::of(BulkOutcome::Failed);
        if sent.len() > 1 {
            self.max_bytes = (self.sent_bytes / 2).max(1);
            report.halved = Some(Halved {
                status,
                items: sent.len(),
            });
            self.resend_first(sent);
        } else {
            report.rejected = sent.len();
            self.rejected.extend(sent.into_iter().map(|item| Rejected {
                item,
                status,
                kind: format!("http_{status}"),
                reason: body.clone(),
            }));
        }
        report.verdict = self.again_or_done();
        report
    }

    /// No answer from this host: the next host gets the request at once, until every
    /// host has failed in a row; then the settlement backs off.
    fn unanswered(&mut self, sent: Vec<Item>, fault: Fault) -> Report {
        let mut report = Report::of(BulkOutcome::Retried);
        report.health = Some(Signal::Down(fault.clone()));
        self.unanswered += 1;
        if self.unanswered < self.policy.hosts {
            self.resend_first(sent);
            report.verdict = Verdict::Again;
            return report;
        }
        self.unanswered = 0;
        self.retry(report, sent, fault)
    }

    /// A round with nothing to retry: the backoff starts afresh.
    fn settled(&mut self, mut report: Report) -> Report {
        self.attempt = 0;
        report.verdict = self.again_or_done();
        report
    }

    /// A round that left `retry` unstored (the first reason: `reason`): they go again
    /// first, after a wait that doubles with each such round in a row.
    fn retry(&mut self, mut report: Report, retry: Vec<Item>, reason: Fault) -> Report {
        self.attempt += 1;
        let p = &self.policy;
        let wait = bulk::backoff(
            self.attempt,
            p.initial_backoff,
            p.max_backoff,
            self.jitter.u64(..),
        );
        report.verdict = Verdict::Backoff {
            wait,
            attempt: self.attempt,
            items: retry.len(),
            reason,
        };
        self.resend_first(retry);
        report
    }

    fn resend_first(&mut self, items: Vec<Item>) {
        for item in items.into_iter().rev() {
            self.todo.push_front(item);
        }
    }

    fn again_or_done(&self) -> Verdict {
        if self.todo.is_empty() {
            Verdict::Done
        } else {
            Verdict::Again
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::Value;

    use super::*;
    use crate::record::DocId;

    /// A real Elasticsearch 8.11.3 answer from `answers/` (recorded by
    /// `tests/es/record-answers.sh`): the status line, then the body.
    macro_rules! recorded {
        ($file:literal) => {
            parse(include_str!(concat!("answers/", $file)))
        };
    }

    fn parse(text: &str) -> Response {
        let (status, body) = text.split_once('\n').expect("status line");
        Response {
            status: status.parse().expect("a status"),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    /// A 200 holding `n` copies of item `i` of a recorded 200 answer, for a request of
    /// `n` items that all answer as that one did.
    fn like(answer: Response, i: usize, n: usize) -> Response {
        let mut body: Value = serde_json::from_slice(&answer.body).unwrap();
        let item = body["items"][i].clone();
        body["items"] = Value::Array(vec![item; n]);
        Response {
            status: 200,
            body: Bytes::from(serde_json::to_vec(&body).unwrap()),
        }
    }

    fn created(n: usize) -> Result<Response, SendError> {
        Ok(like(recorded!("200-created.json"), 0, n))
    }

    fn unavailable(n: usize) -> Result<Response, SendError> {
        Ok(like(recorded!("200-unavailable-shards.json"), 0, n))
    }

    fn items(n: u128) -> Vec<Item> {
        (1..=n)
            .map(|i| Item {
                index: "qwen-logs-2025.04.05".into(),
                id: Some(DocId::from_digest(i)),
                doc: Bytes::from(format!(r#"{{"n":{i:03}}}"#)),
            })
            .collect()
    }

    fn policy(hosts: usize) -> Policy {
        Policy {
            max_bytes: 20 * 1024 * 1024,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            hosts,
        }
    }

    /// The ids of the next request, and its host.
    fn next(s: &mut Settlement) -> (usize, Vec<DocId>) {
        let r = s.request().expect("a request to send");
        (r.host, r.items.iter().map(|i| i.id.unwrap()).collect())
    }

    fn ids(items: &[Item]) -> Vec<DocId> {
        items.iter().map(|i| i.id.unwrap()).collect()
    }

    fn backoff_of(r: &Report) -> (Duration, u32, usize, &Fault) {
        match &r.verdict {
            Verdict::Backoff {
                wait,
                attempt,
                items,
                reason,
            } => (*wait, *attempt, *items, reason),
            other => panic!("expected a backoff, got {other:?} ({r:?})"),
        }
    }

    #[test]
    fn created_items_settle_in_one_request_and_show_the_output_up() {
        let mut s = Settlement::new(items(2), policy(1), 0, 1);
        let (host, sent) = next(&mut s);
        assert_eq!((host, sent), (0, ids(&items(2))));
        let r = s.answer(Ok(recorded!("200-created.json")));
        assert_eq!(r.request, BulkOutcome::Success);
        assert_eq!((r.indexed, r.duplicates, r.rejected), (2, 0, 0));
        assert_eq!(r.health, Some(Signal::Up));
        assert_eq!(r.verdict, Verdict::Done);
        assert!(s.request().is_none(), "nothing left to send");
        assert!(s.finish().is_empty());
    }

    #[test]
    fn a_resent_item_is_a_duplicate_a_refused_one_a_dead_letter_and_the_rest_indexed() {
        let mut s = Settlement::new(items(3), policy(1), 0, 1);
        next(&mut s);
        let r = s.answer(Ok(recorded!("200-duplicate-rejected-created.json")));
        assert_eq!((r.indexed, r.duplicates, r.rejected), (1, 1, 1), "{r:?}");
        assert_eq!(r.request, BulkOutcome::Success, "nothing to retry");
        assert_eq!(r.verdict, Verdict::Done);
        let rejected = s.finish();
        assert_eq!(rejected.len(), 1);
        let dl = &rejected[0];
        assert_eq!(dl.item.id, items(3)[1].id, "the second item was refused");
        assert_eq!(
            (dl.status, dl.kind.as_str()),
            (400, "document_parsing_exception")
        );
        assert!(
            dl.reason
                .contains("failed to parse field [response_length]"),
            "{}",
            dl.reason
        );
    }

    #[test]
    fn only_the_items_refused_with_429_are_sent_again_after_a_backoff() {
        let all = items(4);
        let mut s = Settlement::new(all.clone(), policy(1), 0, 1);
        next(&mut s);
        // [201, 429, 429, 429]
        let r = s.answer(Ok(recorded!("200-write-queue-full.json")));
        assert_eq!(r.request, BulkOutcome::Partial);
        assert_eq!((r.indexed, r.rejected), (1, 0));
        assert_eq!(r.health, Some(Signal::Up), "the cluster answered");
        let (wait, attempt, n, reason) = backoff_of(&r);
        assert_eq!((attempt, n), (1, 3));
        assert!(
            wait >= Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        match reason {
            Fault::Item {
                status: 429,
                reason,
            } => assert!(
                reason.starts_with("es_rejected_execution_exception: rejected execution"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            reason.to_string().starts_with("HTTP 429 "),
            "the log shows the status"
        );
        assert_eq!(
            next(&mut s).1,
            ids(&all[1..]),
            "only the three refused, in order"
        );
        let r = s.answer(created(3));
        assert_eq!((r.indexed, r.verdict.clone()), (3, Verdict::Done));
        assert!(s.finish().is_empty());
    }

    #[test]
    fn unavailable_shard_items_503_are_retried() {
        let mut s = Settlement::new(items(2), policy(1), 0, 1);
        next(&mut s);
        let r = s.answer(Ok(recorded!("200-unavailable-shards.json")));
        assert_eq!(r.request, BulkOutcome::Partial);
        let (_, attempt, n, reason) = backoff_of(&r);
        assert_eq!((attempt, n), (1, 2));
        assert!(
            matches!(reason, Fault::Item { status: 503, reason } if reason.starts_with("unavailable_shards_exception")),
            "{reason:?}"
        );
        assert_eq!(next(&mut s).1, ids(&items(2)));
    }

    #[test]
    fn retries_go_on_forever_doubling_from_100ms_to_10s_with_jitter() {
        let mut s = Settlement::new(items(2), policy(1), 0, 7);
        let mut capped = 0;
        for attempt in 1..=200u32 {
            assert_eq!(next(&mut s).1, ids(&items(2)), "attempt {attempt}");
            let r = s.answer(unavailable(2));
            assert_eq!(r.rejected, 0, "a retry never becomes a dead letter");
            let (wait, a, _, _) = backoff_of(&r);
            let full = (Duration::from_millis(100) * 2u32.pow((attempt - 1).min(20)))
                .min(Duration::from_secs(10));
            assert_eq!(a, attempt);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?}"
            );
            capped += usize::from(full == Duration::from_secs(10));
        }
        assert!(capped > 150, "the wait stops growing at the cap");
        assert!(
            s.request().is_some(),
            "still not settled: retried, not given up"
        );
    }

    #[test]
    fn jitter_spreads_the_waits_of_settlements_failing_together() {
        let waits: std::collections::BTreeSet<Duration> = (0..16)
            .map(|seed| {
                let mut s = Settlement::new(items(1), policy(1), 0, seed);
                next(&mut s);
                backoff_of(&s.answer(unavailable(1))).0
            })
            .collect();
        assert!(waits.len() > 8, "{waits:?}");
    }

    #[test]
    fn a_round_without_retries_starts_the_backoff_afresh() {
        let all = items(4);
        let two = all[..2].iter().map(Item::encoded_len).sum();
        let mut s = Settlement::new(
            all.clone(),
            Policy {
                max_bytes: two,
                ..policy(1)
            },
            0,
            1,
        );
        assert_eq!(next(&mut s).1, ids(&all[..2]));
        assert_eq!(backoff_of(&s.answer(unavailable(2))).1, 1);
        assert_eq!(next(&mut s).1, ids(&all[..2]));
        assert_eq!(backoff_of(&s.answer(unavailable(2))).1, 2);
        assert_eq!(next(&mut s).1, ids(&all[..2]));
        assert_eq!(s.answer(created(2)).verdict, Verdict::Again);
        assert_eq!(next(&mut s).1, ids(&all[2..]));
        let (wait, attempt, _, _) = backoff_of(&s.answer(unavailable(2)));
        assert_eq!(attempt, 1);
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
    }

    #[test]
    fn a_request_too_large_413_is_halved_and_a_single_item_still_refused_is_a_dead_letter() {
        let all = items(4);
        let mut s = Settlement::new(all.clone(), policy(1), 0, 1);
        assert_eq!(next(&mut s).1, ids(&all));
        let r = s.answer(Ok(recorded!("413-too-large.txt")));
        assert_eq!(r.request, BulkOutcome::Failed);
        assert_eq!(
            r.halved,
            Some(Halved {
                status: 413,
                items: 4
            })
        );
        assert_eq!(
            (r.verdict.clone(), r.health.clone()),
            (Verdict::Again, None)
        );
        assert_eq!(next(&mut s).1, ids(&all[..2]), "half the bytes: two items");
        let r = s.answer(Ok(recorded!("413-too-large.txt")));
        assert_eq!(
            r.halved,
            Some(Halved {
                status: 413,
                items: 2
            })
        );
        assert_eq!(next(&mut s).1, ids(&all[..1]));
        let r = s.answer(Ok(recorded!("413-too-large.txt")));
        assert_eq!(
            (r.request, r.rejected, r.halved),
            (BulkOutcome::Failed, 1, None)
        );
        assert_eq!(
            r.verdict,
            Verdict::Again,
            "no backoff: the others go on at once"
        );
        for rest in &all[1..] {
            assert_eq!(
                next(&mut s).1,
                ids(std::slice::from_ref(rest)),
                "one at a time now"
            );
            s.answer(created(1));
        }
        assert!(s.request().is_none());
        let rejected = s.finish();
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].item.id, all[0].id);
        assert_eq!(
            (rejected[0].status, rejected[0].kind.as_str()),
            (413, "http_413")
        );
    }

    #[test]
    fn a_malformed_request_400_is_split_like_a_413() {
        let mut s = Settlement::new(items(2), policy(1), 0, 1);
        next(&mut s);
        let r = s.answer(Ok(recorded!("400-malformed-action.json")));
        assert_eq!(
            r.halved,
            Some(Halved {
                status: 400,
                items: 2
            })
        );
        assert_eq!(next(&mut s).1.len(), 1);
        let r = s.answer(Ok(recorded!("400-malformed-action.json")));
        assert_eq!(r.rejected, 1);
        next(&mut s);
        assert_eq!(s.answer(created(1)).verdict, Verdict::Done);
        let dl = &s.finish()[0];
        assert_eq!((dl.status, dl.kind.as_str()), (400, "http_400"));
        assert!(
            dl.reason.contains("Malformed action/metadata line"),
            "{}",
            dl.reason
        );
    }

    #[test]
    fn refused_credentials_401_403_are_retried_forever_and_show_the_output_down() {
        for (answer, status) in [
            (recorded!("401-bad-password.json"), 401),
            (recorded!("403-read-only-user.json"), 403),
        ] {
            let mut s = Settlement::new(items(2), policy(1), 0, 1);
            for attempt in 1..=20 {
                assert_eq!(next(&mut s).1, ids(&items(2)));
                let r = s.answer(Ok(answer.clone()));
                assert_eq!((r.request, r.rejected), (BulkOutcome::Retried, 0));
                let (_, a, n, reason) = backoff_of(&r);
                assert_eq!((a, n), (attempt, 2));
                match (&r.health, reason) {
                    (
                        Some(Signal::Down(Fault::Refused { status: s1, body })),
                        Fault::Refused { status: s2, .. },
                    ) => {
                        assert_eq!((*s1, *s2), (status, status));
                        assert!(body.contains("security_exception"), "{body}");
                    }
                    other => panic!("{status}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_cluster_that_cannot_write_503_is_retried_and_shows_the_output_down() {
        let mut s = Settlement::new(items(2), policy(1), 0, 1);
        next(&mut s);
        let r = s.answer(Ok(recorded!("503-state-not-recovered.json")));
        assert_eq!(r.request, BulkOutcome::Retried);
        assert!(
            matches!(&r.health, Some(Signal::Down(Fault::Refused { status: 503, body })) if body.contains("state not recovered")),
            "{r:?}"
        );
        assert_eq!(backoff_of(&r).2, 2);
        assert_eq!(next(&mut s).1, ids(&items(2)));
    }

    #[test]
    fn a_busy_cluster_429_is_retried_without_showing_the_output_down() {
        let mut s = Settlement::new(items(2), policy(1), 0, 1);
        next(&mut s);
        let r = s.answer(Ok(recorded!("429-write-queue-full.json")));
        assert_eq!((r.request, r.health.clone()), (BulkOutcome::Retried, None));
        let (_, _, n, reason) = backoff_of(&r);
        assert_eq!(n, 2);
        assert!(reason.to_string().starts_with("HTTP 429 "), "{reason}");
    }

    #[test]
    fn an_unanswered_request_goes_to_the_next_host_at_once_and_backs_off_once_every_host_failed() {
        let refused = || Err(SendError::Connection("connection refused".into()));
        let mut s = Settlement::new(items(2), policy(3), 1, 1);
        assert_eq!(next(&mut s).0, 1);
        for host in [2, 0] {
            let r = s.answer(refused());
            assert_eq!(
                (r.request, r.verdict.clone()),
                (BulkOutcome::Retried, Verdict::Again)
            );
            assert!(
                matches!(r.health, Some(Signal::Down(Fault::Unanswered(_)))),
                "{r:?}"
            );
            assert_eq!(next(&mut s), (host, ids(&items(2))), "failover, same items");
        }
        let r = s.answer(refused());
        let (_, attempt, n, reason) = backoff_of(&r);
        assert_eq!((attempt, n), (1, 2));
        assert_eq!(reason.to_string(), "connection: connection refused");
        assert_eq!(next(&mut s).0, 1, "round again after the wait");
        // An answer resets the failover: the next failure moves on at once again.
        let r = s.answer(Ok(recorded!("503-state-not-recovered.json")));
        backoff_of(&r);
        next(&mut s);
        assert_eq!(s.answer(refused()).verdict, Verdict::Again);
    }

    #[test]
    fn a_timeout_is_an_unanswered_request() {
        let mut s = Settlement::new(items(1), policy(1), 0, 1);
        next(&mut s);
        let timeout = SendError::Timeout(Duration::from_secs(60));
        let r = s.answer(Err(timeout.clone()));
        assert_eq!(
            r.health,
            Some(Signal::Down(Fault::Unanswered(timeout.clone())))
        );
        assert_eq!(backoff_of(&r).3, &Fault::Unanswered(timeout));
    }

    #[test]
    fn a_200_that_is_not_a_bulk_answer_is_an_unanswered_request() {
        let mut s = Settlement::new(items(2), policy(2), 0, 1);
        next(&mut s);
        let page = Response {
            status: 200,
            body: Bytes::from_static(b"<html>proxy login</html>"),
        };
        let r = s.answer(Ok(page));
        assert!(
            matches!(r.health, Some(Signal::Down(Fault::Unreadable(_)))),
            "{r:?}"
        );
        assert_eq!(r.verdict, Verdict::Again, "the other host gets it at once");
        assert_eq!(next(&mut s).0, 1);
    }

    #[test]
    fn an_answer_with_the_wrong_number_of_items_retries_them_all() {
        let mut s = Settlement::new(items(3), policy(1), 0, 1);
        next(&mut s);
        let r = s.answer(Ok(recorded!("200-created.json")));
        assert_eq!(
            (r.request, r.indexed, r.health.clone()),
            (BulkOutcome::Retried, 0, None)
        );
        let (_, _, n, reason) = backoff_of(&r);
        assert_eq!(n, 3);
        assert_eq!(reason, &Fault::ItemCount { got: 2, sent: 3 });
        assert_eq!(next(&mut s).1, ids(&items(3)));
    }

    #[test]
    fn requests_go_round_the_hosts() {
        let all = items(4);
        let one = all[0].encoded_len();
        let mut s = Settlement::new(
            all,
            Policy {
                max_bytes: one,
                ..policy(3)
            },
            1,
            1,
        );
        let mut hosts = Vec::new();
        while let Some(r) = s.request() {
            hosts.push(r.host);
            s.answer(created(1));
        }
        assert_eq!(hosts, [1, 2, 0, 1]);
    }

    #[test]
    fn requests_hold_at_most_max_bytes_and_never_less_than_one_item() {
        let mut all = items(5);
        let len = all[0].encoded_len();
        all[4].doc = Bytes::from(vec![b' '; 3 * len]);
        let max_bytes = len * 5 / 2;
        let mut s = Settlement::new(
            all,
            Policy {
                max_bytes,
                ..policy(1)
            },
            0,
            1,
        );
        let mut sizes = Vec::new();
        while let Some(r) = s.request() {
            let n = r.items.len();
            assert!(
                n == 1 || r.items.iter().map(Item::encoded_len).sum::<usize>() <= max_bytes,
                "{n} items over {max_bytes} bytes"
            );
            let mut body = Vec::new();
            r.body_into(&mut body);
            assert!(body.len() <= r.items.iter().map(Item::encoded_len).sum());
            sizes.push(n);
            s.answer(created(n));
        }
        assert_eq!(sizes, [2, 2, 1], "the oversized last item goes alone");
    }

    #[test]
    fn the_request_stays_the_same_until_it_is_answered() {
        let mut s = Settlement::new(items(2), policy(2), 1, 1);
        assert_eq!(next(&mut s), next(&mut s));
    }
}
