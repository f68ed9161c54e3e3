package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rulelock/rulelock/internal/pgtest"
)

func query(t *testing.T, dsn string) (int, error) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n)
	return n, err
}

// TestCluster starts a cluster, writes a row, kills it with SIGKILL (no
// backend answers after) and restarts it: the committed row is still there.
func TestCluster(t *testing.T) {
	c := pgtest.New(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.DSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	c.Kill()
	// Neither a new connection nor an open one (its backend) answers.
	if _, err := query(t, c.DSN()); err == nil {
		t.Fatal("query after Kill: no error")
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (2)"); err == nil {
		t.Fatal("insert on a connection opened before Kill: no error")
	}
	conn.Close(ctx)
	c.Start()
	if n, err := query(t, c.DSN()); err != nil || n != 1 {
		t.Fatalf("after Kill and Start: got %d rows, %v; want 1", n, err)
	}
	c.Stop()
	c.Start()
	if n, err := query(t, c.DSN()); err != nil || n != 1 {
		t.Fatalf("after Stop and Start: got %d rows, %v; want 1", n, err)
	}
}
