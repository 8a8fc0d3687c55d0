-- Run by tests/tests/clients.rs through the proxy and straight to PostgreSQL; the two outputs
-- must be byte-identical (after the port in \conninfo is normalized).
\conninfo
DROP TABLE IF EXISTS psql_items;
CREATE TABLE psql_items (
    id serial PRIMARY KEY,
    name text NOT NULL,
    price numeric(10, 2),
    tags text[],
    meta jsonb,
    created date,
    active boolean DEFAULT true
);
CREATE INDEX psql_items_name_idx ON psql_items (name);
COMMENT ON TABLE psql_items IS 'for the psql comparison';
\d psql_items
\dt+ psql_*
INSERT INTO psql_items (name, price, tags, meta, created)
VALUES ('apple', 1.25, '{red,fruit}', '{"a": 1, "b": [true, null]}', '2024-01-02'),
       ('bread', 3.5, '{}', NULL, '2024-02-29');
SELECT id, name, price, tags, meta, created, active,
       1.5::float8 AS f, NULL::text AS n, E'multi\nline' AS ml, '\x00ff'::bytea AS b,
       interval '1 day 2 hours' AS iv, 'ünïcødé' AS u
FROM psql_items ORDER BY id;
DO $$
BEGIN
    RAISE NOTICE 'notice number %', 1;
    RAISE WARNING 'a warning with detail' USING DETAIL = 'the detail', HINT = 'a hint';
    RAISE NOTICE 'notice number %', 2;
END
$$;
SELECT 1 / 0;
SELECT * FROM missing_table;
SELEC syntax error;
\copy psql_items (name, price) FROM STDIN
cherry	2.00
durian	7.75
\.
\copy (SELECT id, name, price FROM psql_items ORDER BY id) TO STDOUT
\copy psql_items (name, price) FROM STDIN
not enough columns
\.
\x on
SELECT * FROM psql_items WHERE id = 1;
\x off
BEGIN;
INSERT INTO psql_items (name) VALUES ('rolled back');
SELECT 1 / 0;
SELECT 1;
ROLLBACK;
SELECT count(*) AS items FROM psql_items;
PREPARE by_id (int) AS SELECT name FROM psql_items WHERE id = $1;
EXECUTE by_id(2);
DEALLOCATE by_id;
SELECT 'a' AS x \gset
\echo :x
SELECT generate_series(1, 3) AS n \g
\pset format unaligned
SELECT 'unaligned', 42;
DROP TABLE psql_items;
