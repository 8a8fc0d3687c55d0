//! The tag forms the README's "Tagging requests" section tells users to emit,
//! exactly as its snippets produce them, read back as the README says they
//! are. If the correlation rules change, this fails before the README lies.

use qproxy_analyzer::correlation::{
    extract_tags, request_id_signal, LabelKey, RequestIdSignal, RequestTags, SetScope,
};

fn tags(sql: &str) -> RequestTags {
    extract_tags(sql).unwrap_or_else(|| panic!("no tags in {sql}"))
}

/// A hostile request id: a quote, a comment end, a space and a slash.
const HOSTILE_ID: &str = "r-1 '*/ x";

#[test]
fn django_execute_wrapper_before_and_after_driver_formatting() {
    // `quote(value, safe="")` of HOSTILE_ID and of the route `posts/<int:pk>/`,
    // then `%` doubled: what the wrapper appends.
    let comment =
        "/*request_id='r-1%%20%%27%%2A%%2F%%20x',route='posts%%2F%%3Cint%%3Apk%%3E%%2F'*/";
    // psycopg %-formats a statement with parameters (`%%` becomes `%`); a
    // statement without parameters reaches the server with `%%` as written.
    let formatted = comment.replace("%%", "%");
    for sql in [
        format!("SELECT \"post\".\"id\" FROM \"post\" WHERE \"post\".\"id\" = 1 {comment}"),
        format!("SELECT \"post\".\"id\" FROM \"post\" WHERE \"post\".\"id\" = 1 {formatted}"),
    ] {
        let t = tags(&sql);
        assert_eq!(t.request_id.as_deref(), Some(HOSTILE_ID), "{sql}");
        assert_eq!(t.route.as_deref(), Some("posts/<int:pk>/"), "{sql}");
    }
}

#[test]
fn rails_query_log_tags_with_a_request_id_in_both_formats() {
    let sqlcommenter = "SELECT \"posts\".* FROM \"posts\" /*action='index',application='Blog',\
                        controller='posts',request_id='4f0f0ac5-5a83-4b4e-8f5e-1a4a0b0f6d2e'*/";
    let legacy = "SELECT \"posts\".* FROM \"posts\" /*action:index,application:Blog,\
                  controller:posts,request_id:4f0f0ac5-5a83-4b4e-8f5e-1a4a0b0f6d2e*/";
    for sql in [sqlcommenter, legacy] {
        let t = tags(sql);
        assert_eq!(
            t.request_id.as_deref(),
            Some("4f0f0ac5-5a83-4b4e-8f5e-1a4a0b0f6d2e")
        );
        assert_eq!(t.route.as_deref(), Some("posts#index"));
        assert_eq!(t.label(LabelKey::Application), Some("Blog"));
    }
    // A job: the job id as request id, the job class as route.
    let job = tags("UPDATE \"users\" SET \"x\" = $1 /*job='ImportJob',request_id='6c1e'*/");
    assert_eq!(
        (job.request_id.as_deref(), job.route.as_deref()),
        (Some("6c1e"), Some("ImportJob"))
    );
}

#[test]
fn route_only_comment_labels_without_naming_the_request() {
    let t = tags("SELECT 1 /*controller='post_detail',framework='django%3A5.0',route='posts/%3Cint%3Apk%3E/'*/");
    assert!(!t.has_identity());
    assert_eq!(t.route.as_deref(), Some("posts/<int:pk>/"));
}

#[test]
fn sqlalchemy_event_comment() {
    let t = tags(
        "SELECT posts.id FROM posts WHERE posts.author_id = %(author_id_1)s \
         /*request_id='abc',route='GET%%20%%2Fposts%%2F%%7Bid%%7D'*/",
    );
    assert_eq!(t.request_id.as_deref(), Some("abc"));
    assert_eq!(t.route.as_deref(), Some("GET /posts/{id}"));
}

#[test]
fn node_helper_encodes_what_encode_uri_component_leaves() {
    // encodeURIComponent leaves `'` and `*` alone; the helper encodes `'`
    // as %27, and `/` is always encoded, so `*/` cannot appear.
    let t = tags("SELECT * FROM posts WHERE id = $1 /*request_id='r-1%20%27*%2F%20x'*/");
    assert_eq!(t.request_id.as_deref(), Some(HOSTILE_ID));
}

#[test]
fn prisma_query_tags_request_id_key() {
    let t = tags("SELECT \"public\".\"Post\".\"id\" FROM \"public\".\"Post\" WHERE 1=1 /*requestId='abc-123',route='%2Fposts%2F%3Aid'*/");
    assert_eq!(t.request_id.as_deref(), Some("abc-123"));
    assert_eq!(t.route.as_deref(), Some("/posts/:id"));
}

#[test]
fn go_path_escape_output() {
    // url.PathEscape("r-1 '*/ x") and url.PathEscape("GET /posts/{id}").
    let t = tags(
        "SELECT id, title FROM posts WHERE author_id = $1 \
         /*request_id='r-1%20%27%2A%2F%20x',route='GET%20%2Fposts%2F%7Bid%7D'*/",
    );
    assert_eq!(t.request_id.as_deref(), Some(HOSTILE_ID));
    assert_eq!(t.route.as_deref(), Some("GET /posts/{id}"));
}

#[test]
fn documented_key_spellings_name_the_request() {
    for key in [
        "request_id",
        "x_request_id",
        "X-Request-ID",
        "requestId",
        "correlation_id",
        "x_correlation_id",
    ] {
        let t = tags(&format!("SELECT 1 /*{key}='42'*/"));
        assert_eq!(t.request_id.as_deref(), Some("42"), "{key}");
    }
}

#[test]
fn documented_setting_forms() {
    let set = |id: &str, scope| {
        Some(RequestIdSignal::Set {
            id: id.into(),
            scope,
        })
    };
    assert_eq!(
        request_id_signal("SET qproxy.request_id = '42'", &[]),
        set("42", SetScope::Session)
    );
    assert_eq!(
        request_id_signal("SET LOCAL qproxy.request_id = '42'", &[]),
        set("42", SetScope::Local)
    );
    assert_eq!(
        request_id_signal("SELECT set_config('qproxy.request_id', '42', true)", &[]),
        set("42", SetScope::Local)
    );
    assert_eq!(
        request_id_signal("RESET qproxy.request_id", &[]),
        Some(RequestIdSignal::Clear)
    );
    // Prisma's `$executeRaw` and pgx both send the id as a bind parameter:
    // only its hash is seen.
    for sql in [
        "SELECT set_config('qproxy.request_id', $1, TRUE)",
        "SELECT set_config('qproxy.request_id', $1, true)",
    ] {
        assert_eq!(
            request_id_signal(sql, &[Some(0xabc)]),
            set("param:0000000000000abc", SetScope::Local),
            "{sql}"
        );
    }
}
