package pgstate

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listen wakes the replica when another one appends an APPROVAL entry: it
// LISTENs on a connection of its own and calls follow (gateway.Gateway's
// Follow) on each notification, and once after each (re)connection, until
// ctx is done. A lost connection is opened again after a second; in the
// meantime waiters read the log every second themselves. It also calls
// follow every second, so that the tail a decision folds under its locks
// stays short on a replica that decides little.
func (s *State) Listen(ctx context.Context, follow func(context.Context) error) {
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = follow(ctx)
			}
		}
	}()
	for ctx.Err() == nil {
		_ = s.listen(ctx, follow)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *State) listen(ctx context.Context, follow func(context.Context) error) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return err
	}
	_ = follow(ctx) // what was appended before LISTEN
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		_ = follow(ctx)
	}
}
