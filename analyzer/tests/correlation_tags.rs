//! Request tags from comments exactly as tagging libraries emit them.

use qproxy_analyzer::correlation::tags::{trace_id, MAX_VALUE_LEN};
use qproxy_analyzer::correlation::{extract_tags, LabelKey, RequestTags};

fn tags(sql: &str) -> RequestTags {
    extract_tags(sql).unwrap_or_else(|| panic!("no tags in {sql}"))
}

const TRACE: &str = "5bd66ef5095369c7b0d1f8f4bd33716a";

#[test]
fn django_sqlcommenter_appended() {
    let t = tags(
        r#"INSERT INTO "polls_question" ("question_text", "pub_date") VALUES ('What is this?', '2019-05-28T18:54:50.767481+00:00'::timestamptz) RETURNING "polls_question"."id" /*controller='index',db_driver='django.db.backends.postgresql',framework='django%3A2.2.1',route='%5Epolls/%24',traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01',tracestate='congo%3Dt61rcWkgMzE%2Crojo%3D00f067aa0ba902b7'*/"#,
    );
    assert_eq!(t.trace_id.as_deref(), Some(TRACE));
    assert_eq!(t.request_id, None);
    assert_eq!(t.route.as_deref(), Some("^polls/$"));
    assert_eq!(t.label(LabelKey::Framework), Some("django:2.2.1"));
    assert_eq!(
        t.label(LabelKey::DbDriver),
        Some("django.db.backends.postgresql")
    );
    assert_eq!(t.label(LabelKey::Controller), Some("index"));
}

#[test]
fn python_doubled_percent() {
    // psycopg2 without parameters sends the `%%` the integration doubled.
    let t =
        tags("SELECT 1 /*controller='index',framework='django%%3A2.2.1',route='%%5Epolls/%%24'*/");
    assert_eq!(t.route.as_deref(), Some("^polls/$"));
    assert_eq!(t.label(LabelKey::Framework), Some("django:2.2.1"));
}

#[test]
fn django_prepended_unencoded() {
    let t = tags(
        r#"/*action='GET',controller='shop:cart',route='cart/<int:pk>/'*/ SELECT "item"."id" FROM "item""#,
    );
    assert_eq!(t.route.as_deref(), Some("cart/<int:pk>/"));
    assert_eq!(t.label(LabelKey::Action), Some("GET"));
}

#[test]
fn rails_query_logs_sqlcommenter_format() {
    let t = tags(
        r#"SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2 /*action='show',application='Blog',controller='users'*/"#,
    );
    assert_eq!(t.route.as_deref(), Some("users#show"));
    assert_eq!(t.label(LabelKey::Application), Some("Blog"));
    assert!(!t.has_identity());
}

#[test]
fn rails_query_logs_legacy_format() {
    let t =
        tags(r#"SELECT "posts".* FROM "posts" /*application:Blog,controller:posts,action:index*/"#);
    assert_eq!(t.route.as_deref(), Some("posts#index"));
    assert_eq!(t.label(LabelKey::Application), Some("Blog"));
}

#[test]
fn rails_prepended_with_request_id_and_job() {
    let t = tags(
        r#"/*application:Blog,request_id:4f0f0ac5-5a83-4b4e-8f5e-1a4a0b0f6d2e,namespaced_controller:Admin::UsersController*/ SELECT 1"#,
    );
    assert_eq!(
        t.request_id.as_deref(),
        Some("4f0f0ac5-5a83-4b4e-8f5e-1a4a0b0f6d2e")
    );
    let job = tags(r#"UPDATE "imports" SET "state" = $1 /*application='Blog',job='ImportJob'*/"#);
    assert_eq!(job.route.as_deref(), Some("ImportJob"));
}

#[test]
fn rails_escaped_quote() {
    let t = tags(r"SELECT 1 /*action='show',controller='o\'reilly'*/");
    assert_eq!(t.route.as_deref(), Some("o'reilly#show"));
}

#[test]
fn spring_sqlcommenter_java() {
    let t = tags(
        "select user0_.id as id1_0_ from users user0_ where user0_.id=? /*action='%2Fparam*d',controller='index',framework='spring',traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01',tracestate='congo%3Dt61rcWkgMzE%2Crojo%3D00f067aa0ba902b7'*/",
    );
    assert_eq!(t.trace_id.as_deref(), Some(TRACE));
    assert_eq!(t.route.as_deref(), Some("index#/param*d"));
    assert_eq!(t.label(LabelKey::Framework), Some("spring"));
}

#[test]
fn hibernate_use_sql_comments_is_not_a_tag() {
    assert_eq!(
        extract_tags("/* select u from User u where u.id = :id */ select u1_0.id from users u1_0 where u1_0.id=?"),
        None
    );
    assert_eq!(
        extract_tags("/* <criteria> */ select b1_0.id from book b1_0"),
        None
    );
    assert_eq!(
        extract_tags("/* insert for com.example.Book */insert into book (title,id) values (?,?)"),
        None
    );
}

#[test]
fn knex_and_sequelize() {
    let k = tags(
        r#"select * from "books" where "id" = $1 /*db_driver='knex%3A0.21.5',framework='express%3A4.17.1',route='%2Fbooks%2F%3Aid',traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/"#,
    );
    assert_eq!(
        k.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert_eq!(k.route.as_deref(), Some("/books/:id"));
    assert_eq!(k.label(LabelKey::DbDriver), Some("knex:0.21.5"));
    let s = tags(
        r#"SELECT "id" FROM "Users" AS "User"; /*db_driver='sequelize%3A6.3.5',framework='express%3A4.17.1',route='%5E%2Fusers%2F%3Aid'*/"#,
    );
    assert_eq!(s.route.as_deref(), Some("^/users/:id"));
}

#[test]
fn opentelemetry_traceparent_only() {
    let t = tags(
        "SELECT * FROM orders WHERE id = $1 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',tracestate='rojo%3D00f067aa0ba902b7'*/",
    );
    assert_eq!(
        t.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert!(t.labels.is_empty());
    // An invalid traceparent gives no trace id and, alone, no tags at all.
    assert_eq!(
        extract_tags("SELECT 1 /*traceparent='00-zzzz-b7ad6b7169203331-01'*/"),
        None
    );
    assert!(trace_id("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331").is_none());
}

#[test]
fn request_id_key_spellings_and_encoding() {
    for sql in [
        "SELECT 1 /*request_id='r-1'*/",
        "SELECT 1 /*requestid='r-1'*/",
        "SELECT 1 /*request-id='r-1'*/",
        "SELECT 1 /*X-Request-ID='r-1'*/",
        "SELECT 1 /*x_request_id='r-1'*/",
        "SELECT 1 /*correlation_id='r-1'*/",
        "SELECT 1 /*correlation-id='r-1'*/",
        "SELECT 1 /*x-correlation-id='r-1'*/",
        "SELECT 1 /*x%2Drequest%2Did='r%2D1'*/",
        "SELECT 1 /*request_id:r-1*/",
        "SELECT 1 /* request_id = 'r-1' */",
    ] {
        assert_eq!(tags(sql).request_id.as_deref(), Some("r-1"), "{sql}");
    }
    let t = tags("SELECT 1 /*request_id='a%2Fb%20c',trace='x'*/");
    assert_eq!(t.request_id.as_deref(), Some("a/b c"));
    // Base64 ids keep their `+`.
    assert_eq!(
        tags("SELECT 1 /*request_id='ab+c/=='*/")
            .request_id
            .as_deref(),
        Some("ab+c/==")
    );
}

#[test]
fn trailing_comment_wins_then_leading() {
    let t = tags("/*request_id='lead',route='/a'*/ SELECT 1 /*request_id='trail'*/;\n");
    assert_eq!(t.request_id.as_deref(), Some("trail"));
    assert_eq!(t.route.as_deref(), Some("/a"));
    let two = tags("SELECT 1 /*a:1*/ /*request_id='second'*/");
    assert_eq!(two.request_id.as_deref(), Some("second"));
}

#[test]
fn unknown_keys_and_middle_comments_ignored() {
    assert_eq!(extract_tags("SELECT 1 /*file='app.py',line='12'*/"), None);
    assert_eq!(extract_tags("SELECT /*request_id='mid'*/ 1 FROM t"), None);
    assert_eq!(extract_tags("SELECT 1"), None);
    assert_eq!(extract_tags(""), None);
}

#[test]
fn malformed_comments_yield_nothing() {
    for sql in [
        "SELECT 1 /*request_id='abc'",
        "SELECT 1 request_id='abc'*/",
        "SELECT 1 /*request_id='abc*/",
        "SELECT 1 /* request_id='a' /* nested */ */",
        "/* request_id='a' /* nested */ */ SELECT 1",
        "/*request_id='a' SELECT 1",
        "SELECT 1 /*request_id=*/",
        "SELECT 1 /*=''*/",
        "SELECT 1 /**/",
        "SELECT 1 /*'*/",
        "SELECT 1 /*,,,::==''*/",
        "SELECT 1 /*\u{0}\u{1}\u{ff}*/",
        "SELECT 1 /*%%%%%*/",
        "SELECT '/*request_id=''x''*/'",
        "*/",
        "/*",
        "/*/",
    ] {
        assert_eq!(extract_tags(sql), None, "{sql:?}");
    }
}

#[test]
fn comment_markers_inside_literals_before_the_tag() {
    let t = tags("SELECT * FROM t WHERE a = '*/' AND b = '/*' /*request_id='r'*/");
    assert_eq!(t.request_id.as_deref(), Some("r"));
}

#[test]
fn values_are_capped() {
    let long = "x".repeat(1000);
    let t = tags(&format!(
        "SELECT 1 /*request_id='{long}',controller='{long}'*/"
    ));
    assert_eq!(t.request_id.as_deref().map(str::len), Some(MAX_VALUE_LEN));
    assert!(t.route.as_deref().unwrap().len() <= MAX_VALUE_LEN);
}

#[test]
fn huge_statements_cost_only_their_edges() {
    let body = "x".repeat(8 << 20);
    let sql = format!("INSERT INTO t VALUES ('{body}') /*request_id='big'*/");
    let started = std::time::Instant::now();
    assert_eq!(tags(&sql).request_id.as_deref(), Some("big"));
    // A tag comment longer than the scan window is not read.
    let huge_comment = format!("SELECT 1 /*request_id='{body}'*/");
    assert_eq!(extract_tags(&huge_comment), None);
    let unterminated = format!("SELECT 1 /*{}", "/*".repeat(1 << 20));
    assert_eq!(extract_tags(&unterminated), None);
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
}

// Source locations: one test per spelling, as each library writes it.

fn source(sql: &str) -> (String, Option<u64>, Option<String>) {
    let s = tags(sql)
        .source
        .unwrap_or_else(|| panic!("no source location in {sql}"));
    (s.file.clone(), s.line, s.function.clone())
}

#[test]
fn rails_source_location_in_sqlcommenter_format() {
    // Rails 7.1 `config.active_record.query_log_tags = [..., :source_location]`
    // with the :sqlcommenter formatter: URL-encoded, Ruby 3.4 quoting.
    let (file, line, function) = source(
        r#"SELECT "orders".* FROM "orders" /*action='index',controller='orders',source_location='app%2Fmodels%2Forder.rb%3A12%3Ain%20%27Order.recent%27'*/"#,
    );
    assert_eq!(
        (file.as_str(), line, function.as_deref()),
        ("app/models/order.rb", Some(12), Some("Order.recent"))
    );
    // The source location is no request identity and no route of its own.
    let t = tags(r#"SELECT 1 /*source_location='app%2Fa.rb%3A3'*/"#);
    assert!(!t.has_identity() && t.route.is_none() && t.labels.is_empty());
}

#[test]
fn rails_source_location_in_legacy_format_with_old_ruby_quoting() {
    let (file, line, function) = source(
        "SELECT 1 /*application:Shop,controller:orders,action:index,source_location:app/controllers/orders_controller.rb:7:in `block in index'*/",
    );
    assert_eq!(
        (file.as_str(), line, function.as_deref()),
        (
            "app/controllers/orders_controller.rb",
            Some(7),
            Some("block in index")
        )
    );
}

#[test]
fn marginalia_line() {
    let t = tags(
        "SELECT 1 /*application:Shop,controller:users,action:show,line:/app/models/user.rb:42:in `orders'*/",
    );
    assert_eq!(t.route.as_deref(), Some("users#show"));
    let s = t.source.expect("a source location");
    assert_eq!(
        (s.file.as_str(), s.line, s.function.as_deref()),
        ("/app/models/user.rb", Some(42), Some("orders"))
    );
}

#[test]
fn opentelemetry_code_attributes_in_any_order() {
    let (file, line, function) = source(
        "SELECT 1 /*code.lineno='88',code.function='list_orders',code.filepath='shop%2Fviews.py',traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01'*/",
    );
    assert_eq!(
        (file.as_str(), line, function.as_deref()),
        ("shop/views.py", Some(88), Some("list_orders"))
    );
    // The newer semantic-convention names.
    let (file, line, function) = source(
        "/*code.file.path='src/Orders.java',code.line.number='17',code.function.name='com.shop.Orders.list'*/ SELECT 1",
    );
    assert_eq!(
        (file.as_str(), line, function.as_deref()),
        ("src/Orders.java", Some(17), Some("com.shop.Orders.list"))
    );
}

#[test]
fn source_locations_that_say_nothing_are_dropped() {
    // A line or function without a file, and a backtrace line without a
    // line number, name no place.
    for sql in [
        "SELECT 1 /*code.lineno='3',code.function='f',route='/a'*/",
        "SELECT 1 /*source_location='app%2Fa.rb',route='/a'*/",
        "SELECT 1 /*line:somewhere,controller:a*/",
    ] {
        assert_eq!(tags(sql).source, None, "{sql}");
    }
    // A one-string location wins over OpenTelemetry parts.
    let (file, ..) = source("SELECT 1 /*source_location='a.rb%3A1',code.filepath='b.py'*/");
    assert_eq!(file, "a.rb");
}
