//! Reading an AdmissionReview and answering one that cannot be read, without I/O.
//!
//! Every body gets an AdmissionReview back: a request that cannot be read is refused (fail
//! closed) with a message that says why, echoing its `uid` when one can be found.

use std::fmt;

use byoc_policy::{Decision, Mode, read};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, META_API_VERSION_V1, META_KIND};

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use thiserror::Error;

/// The largest request body read: an AdmissionReview can carry an object and its old version,
/// each up to the API server's 3 MiB request limit (controller-runtime's `maxRequestSize`).
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// Why a request body is not a readable AdmissionReview.
#[derive(Debug, Error)]
pub enum ReviewError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// Too many bytes of other bodies were being read or parsed for this one to wait for
    /// ([`crate::budget`]).
    #[error("the webhook is busy: other requests' bodies held its body budget for {0:?}; retry")]
    Busy(std::time::Duration),
    /// The body could not be received.
    #[error("cannot read the request body: {0}")]
    Body(String),
    /// The body is not JSON.
    #[error("the request body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// JSON, but not an `admission.k8s.io/v1` AdmissionReview.
    #[error(
        "expected apiVersion {META_API_VERSION_V1:?} and kind {META_KIND:?}, got apiVersion \
         {api_version:?} and kind {kind:?}; register the webhook with admissionReviewVersions [v1]"
    )]
    NotAReview {
        /// The apiVersion sent.
        api_version: String,
        /// The kind sent.
        kind: String,
    },
    /// An AdmissionReview without a `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// A request without a `uid`, which the answer must echo.
    #[error("the AdmissionReview request has no uid")]
    NoUid,
    /// A request whose fields have the wrong shape.
    #[error("the AdmissionReview request cannot be read: {0}")]
    Invalid(serde_json::Error),
}

impl ReviewError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Busy(_) => "busy",
            Self::Body(_) => "body",
            Self::NotJson(_) => "not_json",
            Self::NotAReview { .. } => "not_a_review",
            Self::NoRequest => "no_request",
            Self::NoUid => "no_uid",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// A request the webhook could not read, with the `uid` to echo when one was found.
#[derive(Debug)]
pub struct Unreadable {
    /// The request's uid, or empty.
    pub uid: String,
    /// What is wrong.
    pub error: ReviewError,
}

impl Unreadable {
    fn new(error: ReviewError) -> Self {
        Self {
            uid: String::new(),
            error,
        }
    }

    /// The refusal: `allowed: false`, code 400, the error as message.
    pub fn response(&self) -> AdmissionResponse {
        let mut response = AdmissionResponse::invalid(format!(
            "byoc registry policy: {}; the request is refused",
            self.error
        ));
        response.uid.clone_from(&self.uid);
        response.result.code = match self.error {
            ReviewError::TooLarge => 413,
            ReviewError::Busy(_) => 503,
            _ => 400,
        };
        response
    }
}

impl From<ReviewError> for Unreadable {
    fn from(error: ReviewError) -> Self {
        Self::new(error)
    }
}

/// Parses a request body into the AdmissionRequest it carries, keeping only what the policy
/// reads ([`byoc_policy::read`]).
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<read::Object>, Unreadable> {
    let review = match read::admission_review(body) {
        Ok(review) => review,
        // serde_json reports some wrong types (an enum that is a number) as syntax errors:
        // whether the body is JSON at all is asked of a pass that keeps nothing.
        Err(e) if e.classify() == Category::Data || is_json(body) => {
            return Err(diagnose(body, e));
        }
        Err(e) => return Err(ReviewError::NotJson(e).into()),
    };
    let (api_version, kind) = (&review.types.api_version, &review.types.kind);
    if api_version != META_API_VERSION_V1 || kind != META_KIND {
        let error = ReviewError::NotAReview {
            api_version: api_version.clone(),
            kind: kind.clone(),
        };
        let uid = review.request.map(|r| r.uid).unwrap_or_default();
        return Err(Unreadable { uid, error });
    }
    let request: AdmissionRequest<read::Object> = review
        .try_into()
        .map_err(|_| Unreadable::new(ReviewError::NoRequest))?;
    if request.uid.is_empty() {
        return Err(ReviewError::NoUid.into());
    }
    Ok(request)
}

fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(body).is_ok()
}

/// Explains why a JSON body is not a readable AdmissionReview, finding its uid if it has one.
/// A second pass over the body, which keeps nothing but three strings.
fn diagnose(body: &[u8], error: serde_json::Error) -> Unreadable {
    if error.to_string().starts_with("duplicate ") {
        // A key twice where the policy reads: which one counts must not be a guess.
        let uid = serde_json::from_slice::<Outline>(body)
            .ok()
            .and_then(|o| o.request)
            .and_then(|r| r.uid.0)
            .unwrap_or_default();
        return Unreadable {
            uid,
            error: ReviewError::Invalid(error),
        };
    }
    let outline = serde_json::from_slice::<Outline>(body).unwrap_or_default();
    let api_version = outline.api_version.0.unwrap_or_default();
    let kind = outline.kind.0.unwrap_or_default();
    let request = outline.request;
    let present = request.is_some();
    let uid = request.and_then(|r| r.uid.0).unwrap_or_default();
    let error = if api_version != META_API_VERSION_V1 || kind != META_KIND {
        ReviewError::NotAReview { api_version, kind }
    } else if !present {
        ReviewError::NoRequest
    } else if uid.is_empty() {
        ReviewError::NoUid
    } else {
        ReviewError::Invalid(error)
    };
    Unreadable { uid, error }
}

/// What [`diagnose`] reads of a body. Values of other types are skipped, unallocated.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Outline {
    api_version: Text,
    kind: Text,
    /// `None` when absent or null.
    request: Option<RequestOutline>,
}

/// A request that is not null, and its uid when it is an object with a string `uid`.
#[derive(Default)]
struct RequestOutline {
    uid: Text,
}

/// A string, or `None` for a value of any other type.
#[derive(Default)]
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lenient).map(|v| Text(v.text))
    }
}

impl<'de> Deserialize<'de> for RequestOutline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lenient)
            .map(|v| RequestOutline { uid: Text(v.uid) })
    }
}

/// Reads any value: a string, or the string `uid` of an object.
struct Lenient;

#[derive(Default)]
struct Read {
    text: Option<String>,
    uid: Option<String>,
}

impl<'de> Visitor<'de> for Lenient {
    type Value = Read;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, v: &str) -> Result<Read, E> {
        Ok(Read {
            text: Some(v.to_owned()),
            uid: None,
        })
    }

    fn visit_bool<E>(self, _: bool) -> Result<Read, E> {
        Ok(Read::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<Read, E> {
        Ok(Read::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<Read, E> {
        Ok(Read::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<Read, E> {
        Ok(Read::default())
    }

    fn visit_unit<E>(self) -> Result<Read, E> {
        Ok(Read::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Read, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Read::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read, A::Error> {
        let mut read = Read::default();
        while let Some(key) = map.next_key::<Text>()? {
            if key.0.as_deref() == Some("uid") {
                read.uid = map.next_value::<Text>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(read)
    }
}

/// What happened to a request, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Admitted, nothing to report.
    Admitted,
    /// Refused.
    Denied,
    /// Admitted with warnings (warn mode).
    Warned,
    /// Admitted and recorded (audit mode).
    Audited,
}

impl Verdict {
    /// The verdict on `decision` under `mode`.
    pub fn of(decision: &Decision, mode: Mode) -> Self {
        if !decision.is_admitted(mode) {
            Self::Denied
        } else if decision.reason.is_registry_violation() {
            match mode {
                Mode::Warn => Self::Warned,
                Mode::Audit => Self::Audited,
                Mode::Enforce => Self::Admitted,
            }
        } else {
            Self::Admitted
        }
    }

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::Denied => "denied",
            Self::Warned => "warned",
            Self::Audited => "audited",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn request(extra: Value) -> Value {
        let mut r = json!({
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "tool-a",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},
        });
        if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
            r.extend(extra.clone());
        }
        r
    }

    fn review(request: Value) -> Vec<u8> {
        json!({"apiVersion": META_API_VERSION_V1, "kind": META_KIND, "request": request})
            .to_string()
            .into_bytes()
    }

    fn unreadable(body: &[u8]) -> Unreadable {
        parse(body).expect_err("the body should be refused")
    }

    #[test]
    fn a_review_parses() {
        let req = parse(&review(request(json!({})))).unwrap();
        assert_eq!(req.uid, "u-1");
        assert_eq!(req.namespace.as_deref(), Some("tool-a"));
    }

    #[test]
    fn unreadable_bodies_are_explained_and_echo_the_uid() {
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (b"".to_vec(), "not_json", ""),
            (b"{\"apiVersion\": ".to_vec(), "not_json", ""),
            (b"\xff\xfe".to_vec(), "not_json", ""),
            (b"[1, 2]".to_vec(), "not_a_review", ""),
            (
                json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": request(json!({}))})
                    .to_string()
                    .into_bytes(),
                "not_a_review",
                "u-1",
            ),
            (json!({"apiVersion": "v1", "kind": "Pod"}).to_string().into_bytes(), "not_a_review", ""),
            (json!({"apiVersion": META_API_VERSION_V1, "kind": META_KIND}).to_string().into_bytes(), "no_request", ""),
            (
                json!({"apiVersion": META_API_VERSION_V1, "kind": META_KIND, "request": null}).to_string().into_bytes(),
                "no_request",
                "",
            ),
            (review(request(json!({"uid": ""}))), "no_uid", ""),
            (review(request(json!({"uid": null}))), "no_uid", ""),
            (review(request(json!({"operation": "SMASH"}))), "invalid", "u-1"),
            (review(request(json!({"object": "a pod"}))), "invalid", "u-1"),
            (review(request(json!({"kind": null}))), "invalid", "u-1"),
            // A key twice where the policy reads: which one counts must not be a guess.
            (
                br#"{"request": {"object": {"spec": {"containers": []}, "spec": {}}}}"#.to_vec(),
                "invalid",
                "",
            ),
        ];
        for (body, label, uid) in cases {
            let shown = String::from_utf8_lossy(&body).into_owned();
            let u = unreadable(&body);
            assert_eq!(u.error.metric_label(), label, "{shown}: {}", u.error);
            assert_eq!(u.uid, uid, "{shown}");
            let response = u.response();
            assert!(!response.allowed);
            assert_eq!(response.uid, uid);
            assert_eq!(response.result.code, 400);
            assert!(
                response.result.message.contains(&u.error.to_string()),
                "{shown}"
            );
        }
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let u = unreadable(
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            u.response().result.message,
            "byoc registry policy: expected apiVersion \"admission.k8s.io/v1\" and kind \
             \"AdmissionReview\", got apiVersion \"admission.k8s.io/v1beta1\" and kind \
             \"AdmissionReview\"; register the webhook with admissionReviewVersions [v1]; the \
             request is refused"
        );
        let too_large = Unreadable::from(ReviewError::TooLarge).response();
        assert_eq!(too_large.result.code, 413);
        assert!(
            too_large
                .result
                .message
                .contains("larger than 7340032 bytes")
        );
    }

    #[test]
    fn verdicts() {
        use byoc_policy::{Allowance, Config, decide};
        let now = "2026-11-21T12:00:00Z".parse().unwrap();
        let bad = review(request(
            json!({"object": {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}),
        ));
        let req = parse(&bad).unwrap();
        for (mode, verdict) in [
            (Mode::Enforce, Verdict::Denied),
            (Mode::Warn, Verdict::Warned),
            (Mode::Audit, Verdict::Audited),
        ] {
            let config = Config {
                mode,
                ..Config::default()
            };
            let d = decide(&config, &req, &Allowance::default(), now);
            assert_eq!(Verdict::of(&d, mode), verdict);
        }
        let exempt = review(request(json!({"namespace": "kube-system"})));
        let config = Config::default();
        let d = decide(
            &config,
            &parse(&exempt).unwrap(),
            &Allowance::default(),
            now,
        );
        assert_eq!(Verdict::of(&d, Mode::Enforce), Verdict::Admitted);
    }
}
