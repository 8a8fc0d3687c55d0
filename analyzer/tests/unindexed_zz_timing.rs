mod unindexed_support;
#[test]
fn timing() {
    let cat = unindexed_support::shop();
    let sql = r#"select o1_0.id,o1_0.total,u1_0.email,li1_0.qty from orders o1_0 join users u1_0 on u1_0.id=o1_0.user_id left join line_items li1_0 on li1_0.order_id=o1_0.id where u1_0.email=$1 and o1_0.status in ($2,$3) and o1_0.created_at>$4 order by o1_0.created_at desc limit $5"#;
    let t = std::time::Instant::now();
    for _ in 0..2000 { std::hint::black_box(unindexed_support::issues_in(&cat, sql)); }
    eprintln!("per statement: {:?} -> {:?}", t.elapsed() / 2000, unindexed_support::found(sql));
}
