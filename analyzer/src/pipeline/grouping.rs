//! What a finding says about the request it was seen in: how it names
//! the request, the framework its tags name, and how far its grouping can
//! be trusted (a note for untagged traffic, `details.confidence`).

use crate::correlation::{Confidence, CorrelationSource, LabelKey, RequestInfo};
use crate::detect::idle_in_transaction::RequestLabels;
use crate::detect::weigh_by_confidence;
use crate::finding::{RequestRef, Severity};

/// How a finding names the request it was seen in.
pub(super) fn request_ref(request: &RequestInfo) -> RequestRef {
    RequestRef {
        id: Some(
            request
                .request_id
                .as_deref()
                .or(request.trace_id.as_deref())
                .map(str::to_string)
                .unwrap_or_else(|| request.id.to_string()),
        ),
        route: request.route.as_deref().map(str::to_string),
        correlation: Some(request.source.as_str().to_string()),
    }
}

/// The framework or driver the request's tags name (Rails' marginalia
/// `controller#action` routes say Rails), for ORM idioms.
pub(super) fn framework_of(request: &RequestInfo) -> Option<&str> {
    request
        .labels
        .iter()
        .find(|(k, _)| matches!(k, LabelKey::Framework | LabelKey::DbDriver))
        .map(|(_, v)| v.as_ref())
        .or_else(|| {
            request
                .route
                .as_deref()
                .filter(|r| r.contains('#'))
                .map(|_| "rails")
        })
}

/// The request and its framework, as the idle detector keeps them.
pub(super) fn request_labels(request: &RequestInfo) -> RequestLabels {
    RequestLabels {
        request: request_ref(request),
        framework: framework_of(request).map(std::sync::Arc::from),
        trace_id: request.trace_id.clone(),
    }
}

/// What a finding from untagged traffic says about its grouping.
pub(super) fn grouping_note(request: &RequestInfo) -> Option<&'static str> {
    match (request.source, request.cut) {
        (s, _) if s.is_correlated() => None,
        (CorrelationSource::Transaction, false) => Some("untagged: grouped by transaction"),
        (CorrelationSource::Transaction, true) => Some(
            "untagged: grouped by transaction, one slice of a transaction cut at the fallback \
             bounds",
        ),
        (_, false) => Some("untagged: grouped by connection activity between idle gaps"),
        (_, true) => Some(
            "untagged: grouped by connection activity between idle gaps, one slice of a \
             connection that never went quiet, cut at the fallback bounds",
        ),
    }
}

/// Weighs a per-request finding by how far its request is known to be
/// one: `details.confidence` always, the severity by the detectors' rule
/// ([`weigh_by_confidence`]), and for a low-confidence grouping (idle
/// gaps, or a group cut at the fallback bounds) a suggestion that says the
/// grouping was a guess.
pub(super) fn weigh_by_grouping(
    request: &RequestInfo,
    severity: &mut Severity,
    details: &mut serde_json::Map<String, serde_json::Value>,
    suggestion: &mut String,
) {
    let confidence = request.confidence();
    details.insert("confidence".into(), confidence.as_str().into());
    *severity = weigh_by_confidence(*severity, confidence);
    if confidence != Confidence::Low {
        return;
    }
    let how = match request.source {
        CorrelationSource::Transaction => {
            "grouped by transaction and cut at the fallback bounds ([analyzer.correlation] \
             fallback_max_statements, fallback_max_duration), not by a request tag"
        }
        _ if request.cut => {
            "grouped by idle gaps and cut at the fallback bounds ([analyzer.correlation] \
             fallback_max_statements, fallback_max_duration), not by a request tag"
        }
        _ => "grouped by idle gaps, not by a request tag",
    };
    suggestion.push_str(&format!(
        " Low confidence: these executions were {how}, so they may belong to several requests \
         or to a job's loop. Tag requests (a sqlcommenter comment or SET qproxy.request_id) to \
         have them judged per request."
    ));
}
