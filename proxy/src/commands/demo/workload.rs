//! The demo's schema and its app-like workload: requests tagged the way
//! sqlcommenter and Rails tag them, with one of every finding kind and
//! clean controls next to each, so the report shows both what qproxy flags
//! and what it leaves alone.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls};

/// Schema and data, loaded straight into PostgreSQL (not through the
/// proxy: setup is not the application's traffic).
pub const SCHEMA: &str = "
CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE);
CREATE TABLE posts (
    id serial PRIMARY KEY,
    author_id int NOT NULL REFERENCES authors(id),  -- no index: the classic missing FK index
    title text NOT NULL,
    published boolean NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE comments (
    id serial PRIMARY KEY,
    post_id int NOT NULL REFERENCES posts(id),
    body text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX comments_post_id_idx ON comments (post_id);
CREATE INDEX comments_created_at_idx ON comments (created_at);
CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE post_reads (post_id int NOT NULL, reader text NOT NULL, read_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, created_at timestamptz NOT NULL, payload text);
INSERT INTO authors (name, email) SELECT 'author ' || g, 'author' || g || '@example.com' FROM generate_series(1, 2000) g;
INSERT INTO posts (author_id, title, published, created_at)
    SELECT 1 + (g::bigint * 7919) % 2000, 'post ' || g, g % 2 = 0, now() - g * interval '1 minute' FROM generate_series(1, 50000) g;
INSERT INTO comments (post_id, body, created_at)
    SELECT 1 + (g::bigint * 104729) % 50000, 'comment ' || g, now() - g * interval '1 second' FROM generate_series(1, 100000) g;
INSERT INTO settings SELECT 'key' || g, 'value' || g FROM generate_series(1, 10) g;
INSERT INTO settings VALUES ('theme', 'dark');
INSERT INTO events (kind, created_at, payload)
    SELECT 'kind' || (g % 10), now() - g * interval '1 second', 'payload' FROM generate_series(1, 100000) g;
ANALYZE;
";

/// A sqlcommenter comment as Django's middleware appends it.
fn django(route: &str, request: &str) -> String {
    format!("/*controller='{route}',framework='django%3A4.2',request_id='{request}'*/")
}

/// A Rails 7.1 QueryLogs comment in the legacy marginalia format.
fn rails(controller: &str, action: &str, request: &str) -> String {
    format!("/*application:Blog,controller:{controller},action:{action},request_id:{request}*/")
}

/// Connects to the proxy and runs the workload; returns how many requests it made.
pub async fn run(proxy_url: &str) -> Result<u32> {
    let (client, connection) = tokio_postgres::connect(proxy_url, NoTls)
        .await
        .context("connecting through the proxy")?;
    let driver = tokio::spawn(connection);
    let (second, connection2) = tokio_postgres::connect(proxy_url, NoTls).await?;
    let driver2 = tokio::spawn(connection2);
    // A worker that never tags its queries (a background job, raw SQL).
    let (untagged, connection3) = tokio_postgres::connect(proxy_url, NoTls).await?;
    let driver3 = tokio::spawn(connection3);
    let mut requests = 0;
    for round in 0..5u32 {
        requests += posts_index_with_n_plus_one(&client, round).await?;
        requests += posts_index_batched(&second, round).await?;
        requests += settings_repeated(&client, round).await?;
        requests += author_page(&second, round).await?;
        requests += recent_events(&client, round).await?;
        requests += untagged_transaction(&untagged, round).await?;
        requests += archive_page(&second, round).await?;
        requests += comments_today(&client, round).await?;
        requests += account_cleanup(&second, round).await?;
        requests += daily_report(&client, round).await?;
    }
    requests += export_published(&client).await?;
    requests += mark_read_one_by_one(&client).await?;
    requests += mark_read_in_one_insert(&second).await?;
    requests += dashboard(&client, "dashboard.full", 14).await?;
    requests += dashboard(&second, "dashboard.compact", 7).await?;
    requests += pay_order(&client, "orders.pay", Duration::from_millis(1200)).await?;
    requests += pay_order(&second, "orders.pay_quick", Duration::ZERO).await?;
    drop(client);
    drop(second);
    drop(untagged);
    let _ = driver.await;
    let _ = driver2.await;
    let _ = driver3.await;
    Ok(requests)
}

/// The first page of published posts: the parent query of both the N+1
/// and its batched control.
async fn published_page(c: &Client, tag: &str) -> Result<Vec<tokio_postgres::Row>> {
    let sql = format!(
        "SELECT id, author_id, title FROM posts WHERE published ORDER BY id LIMIT 20 {tag}"
    );
    Ok(c.query(&sql, &[]).await?)
}

/// N+1: one author lookup per post, each a separate prepared execution.
async fn posts_index_with_n_plus_one(c: &Client, round: u32) -> Result<u32> {
    let tag = django("posts.index", &format!("req-n1-{round}"));
    let posts = published_page(c, &tag).await?;
    let author = c
        .prepare(&format!("SELECT id, name FROM authors WHERE id = $1 {tag}"))
        .await?;
    for p in &posts {
        let author_id: i32 = p.get(1);
        c.query_one(&author, &[&author_id]).await?;
    }
    Ok(1)
}

/// Control: the same page with the authors fetched in one batched query.
async fn posts_index_batched(c: &Client, round: u32) -> Result<u32> {
    let tag = django("posts.index_batched", &format!("req-batch-{round}"));
    let posts = published_page(c, &tag).await?;
    let ids: Vec<i32> = posts.iter().map(|p| p.get(1)).collect();
    c.query(
        &format!("SELECT id, name FROM authors WHERE id = ANY($1) {tag}"),
        &[&ids],
    )
    .await?;
    // Control: a primary-key lookup once per request is not an N+1.
    c.query_one(
        &format!("SELECT id, name, email FROM authors WHERE id = $1 {tag}"),
        &[&(round as i32 + 1)],
    )
    .await?;
    Ok(1)
}

/// Repeated query: the same setting read four times in one request.
async fn settings_repeated(c: &Client, round: u32) -> Result<u32> {
    let tag = rails("settings", "show", &format!("req-settings-{round}"));
    for _ in 0..4 {
        c.query_one(
            &format!("SELECT value FROM settings WHERE key = $1 {tag}"),
            &[&"theme"],
        )
        .await?;
    }
    // Control: a small table read whole is fine.
    c.query(&format!("SELECT key, value FROM settings {tag}"), &[])
        .await?;
    Ok(1)
}

/// Unindexed filter: posts by author has no index on author_id.
async fn author_page(c: &Client, round: u32) -> Result<u32> {
    let tag = rails("authors", "show", &format!("req-author-{round}"));
    let author = (round as i32) * 13 + 1;
    c.query(
        &format!("SELECT id, title FROM posts WHERE author_id = $1 ORDER BY id LIMIT 10 {tag}"),
        &[&author],
    )
    .await?;
    // Controls: an indexed filter with an aggregate, and an indexed sort.
    c.query_one(
        &format!("SELECT count(*) FROM comments WHERE post_id = $1 {tag}"),
        &[&author],
    )
    .await?;
    c.query(
        &format!("SELECT id FROM posts ORDER BY id DESC LIMIT 10 {tag}"),
        &[],
    )
    .await?;
    Ok(1)
}

/// Unindexed sort: newest events, but no index on created_at.
async fn recent_events(c: &Client, round: u32) -> Result<u32> {
    let tag = rails("events", "index", &format!("req-events-{round}"));
    c.query(
        &format!("SELECT id, kind, created_at FROM events ORDER BY created_at DESC LIMIT 50 {tag}"),
        &[],
    )
    .await?;
    Ok(1)
}

/// Untagged, simple protocol, in a transaction: comment counts per post,
/// one query each (grouped by transaction).
async fn untagged_transaction(c: &Client, round: u32) -> Result<u32> {
    let offset = round * 10;
    c.batch_execute("BEGIN").await?;
    let rows = c
        .simple_query(&format!(
            "SELECT id FROM posts ORDER BY id LIMIT 10 OFFSET {offset}"
        ))
        .await?;
    for msg in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            let id = row.get(0).unwrap_or("0");
            c.simple_query(&format!("SELECT body FROM comments WHERE post_id = {id}"))
                .await?;
        }
    }
    c.batch_execute("COMMIT").await?;
    Ok(1)
}

/// Offset pagination: a deep page of the post archive, the OFFSET bound
/// as a parameter (2,000 rows skipped per page). Its control is
/// `untagged_transaction`'s first page (OFFSET 0 to 40).
async fn archive_page(c: &Client, round: u32) -> Result<u32> {
    let tag = django("posts.archive", &format!("req-archive-{round}"));
    let offset = 2_000 + i64::from(round) * 20;
    c.query(
        &format!("SELECT id, title FROM posts ORDER BY id LIMIT 20 OFFSET $1 {tag}"),
        &[&offset],
    )
    .await?;
    Ok(1)
}

/// Non-sargable filter: today's comments counted through a function of the
/// indexed created_at; the control asks for the same rows as a range.
async fn comments_today(c: &Client, round: u32) -> Result<u32> {
    let tag = rails("stats", "comments", &format!("req-stats-{round}"));
    c.query_one(
        &format!(
            "SELECT count(*) FROM comments WHERE date_trunc('day', created_at) = date_trunc('day', now()) {tag}"
        ),
        &[],
    )
    .await?;
    c.query_one(
        &format!(
            "SELECT count(*) FROM comments WHERE created_at >= date_trunc('day', now()) \
             AND created_at < date_trunc('day', now()) + interval '1 day' {tag}"
        ),
        &[],
    )
    .await?;
    Ok(1)
}

/// Unindexed foreign key: deleting an author makes PostgreSQL look for
/// their posts, and posts.author_id has no index. The control deletes a
/// post, whose comments.post_id reference is indexed.
async fn account_cleanup(c: &Client, round: u32) -> Result<u32> {
    let tag = rails("accounts", "destroy", &format!("req-cleanup-{round}"));
    let author: i32 = c
        .query_one(
            &format!("INSERT INTO authors (name, email) VALUES ($1, $2) RETURNING id {tag}"),
            &[&"leaving", &format!("leaving{round}@example.com")],
        )
        .await?
        .get(0);
    c.execute(
        &format!("DELETE FROM authors WHERE id = $1 {tag}"),
        &[&author],
    )
    .await?;
    let post: i32 = c
        .query_one(
            &format!(
                "INSERT INTO posts (author_id, title, published, created_at) \
                 VALUES ($1, 'draft', false, now()) RETURNING id {tag}"
            ),
            &[&1i32],
        )
        .await?
        .get(0);
    c.execute(&format!("DELETE FROM posts WHERE id = $1 {tag}"), &[&post])
        .await?;
    Ok(1)
}

/// Unbounded select: every published post, no LIMIT.
async fn export_published(c: &Client) -> Result<u32> {
    let tag = rails("exports", "create", "req-export-1");
    c.query(
        &format!("SELECT id, title FROM posts WHERE published {tag}"),
        &[],
    )
    .await?;
    Ok(1)
}

/// Slow query: a report whose query takes about 150 ms every time
/// (`pg_sleep` stands in for a heavy aggregate); the primary-key lookups
/// of the other requests are the fast control.
async fn daily_report(c: &Client, round: u32) -> Result<u32> {
    let tag = django("reports.daily", &format!("req-report-{round}"));
    c.query_one(
        &format!("SELECT pg_sleep(0.15)::text AS waited, value FROM settings WHERE key = $1 {tag}"),
        &[&"theme"],
    )
    .await?;
    Ok(1)
}

/// N+1 write: one INSERT per post read, each its own round trip.
async fn mark_read_one_by_one(c: &Client) -> Result<u32> {
    let tag = django("posts.mark_read", "req-mark-read-1");
    let insert = c
        .prepare(&format!(
            "INSERT INTO post_reads (post_id, reader) VALUES ($1, $2) {tag}"
        ))
        .await?;
    for post in 1..=10i32 {
        c.execute(&insert, &[&post, &"reader-1"]).await?;
    }
    Ok(1)
}

/// Control: the same rows in one set-based INSERT.
async fn mark_read_in_one_insert(c: &Client) -> Result<u32> {
    let tag = django("posts.mark_read_bulk", "req-mark-read-2");
    let posts: Vec<i32> = (1..=10).collect();
    c.execute(
        &format!("INSERT INTO post_reads (post_id, reader) SELECT unnest($1::int[]), $2 {tag}"),
        &[&posts, &"reader-2"],
    )
    .await?;
    Ok(1)
}

/// Too many queries (14 widgets: 56 statements) and its control (7
/// widgets: 28): each widget reads four settings with its own query, so
/// no single shape is an N+1, only the total is too much.
async fn dashboard(c: &Client, route: &str, widgets: u32) -> Result<u32> {
    let tag = django(route, &format!("req-{route}"));
    for widget in 0..widgets {
        let sql = format!("SELECT value AS widget_{widget} FROM settings WHERE key = $1 {tag}");
        for key in ["key1", "key2", "key3", "key4"] {
            c.query_opt(&sql, &[&key]).await?;
        }
    }
    Ok(1)
}

/// Idle in transaction: the order row is locked, then the request waits
/// `payment` for a payment API before it writes and commits. With no wait
/// it is the control.
async fn pay_order(c: &Client, route: &str, payment: Duration) -> Result<u32> {
    let tag = django(route, &format!("req-{route}"));
    c.batch_execute(&format!("BEGIN {tag}")).await?;
    c.query_one(
        &format!("SELECT id, name FROM authors WHERE id = $1 FOR UPDATE {tag}"),
        &[&7i32],
    )
    .await?;
    tokio::time::sleep(payment).await;
    c.execute(
        &format!("UPDATE authors SET name = name WHERE id = $1 {tag}"),
        &[&7i32],
    )
    .await?;
    c.batch_execute(&format!("COMMIT {tag}")).await?;
    Ok(1)
}
