package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/karlmalone/karlmalone/attachment"
	"github.com/karlmalone/karlmalone/gen/db"
	"github.com/karlmalone/karlmalone/store"
)

// AttachmentCollector removes attachments that no message carries once
// Config.AttachmentGCGrace has passed since their upload, and their files
// once no row names the content. Without it an upload never sent (or a
// message recalled, which drops its attachment) would hold its bytes, and
// its uploader's quota, for good.
//
// Each pass is bounded (Config.AttachmentGCBatch rows) and safe beside other
// nodes' passes and concurrent uploads and sends: rows a send is taking are
// skipped (DeleteUnsentAttachments), and a file is removed only under the
// content's lock, which an upload of the same bytes takes too
// (LockAttachmentContent). A crash between a pass's two steps leaves files
// that no row names: space only, never a row without its file.
type AttachmentCollector struct {
	store *store.Store
	blobs attachment.Store
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
}

// NewAttachmentCollector returns the collector for the server that d
// builds: the same database, attachment store and config.
func NewAttachmentCollector(d Deps) *AttachmentCollector {
	d.Config = d.Config.withDefaults()
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return &AttachmentCollector{store: store.New(d.Pool), blobs: attachmentStore(d), cfg: d.Config, log: d.Log, now: d.Now}
}

// attachmentStore is d's attachment store: Deps.Attachments, or the local
// directory Config.AttachmentDir.
func attachmentStore(d Deps) attachment.Store {
	if d.Attachments != nil {
		return d.Attachments
	}
	return attachment.NewFS(d.Config.AttachmentDir)
}

// Run collects every Config.AttachmentGCInterval until ctx ends, and once at
// once. A failed pass is logged; the next one tries again.
func (c *AttachmentCollector) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.AttachmentGCInterval)
	defer t.Stop()
	for {
		rows, files, err := c.Collect(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Warn("attachment collection", "rows", rows, "files", files, "err", err)
		case rows > 0:
			c.log.Info("attachments collected", "rows", rows, "files", files)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Collect runs one pass: it removes up to Config.AttachmentGCBatch unsent
// attachment rows older than the grace period, then the files of those whose
// content no row names any more. It returns how many of each it removed.
func (c *AttachmentCollector) Collect(ctx context.Context) (rows, files int, err error) {
	var sums [][]byte
	err = c.store.InTx(ctx, func(q *db.Queries) error {
		var err error
		sums, err = q.DeleteUnsentAttachments(ctx, db.DeleteUnsentAttachmentsParams{
			Before: c.now().Add(-c.cfg.AttachmentGCGrace), MaxRows: int32(c.cfg.AttachmentGCBatch),
		})
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("delete unsent attachments: %w", err)
	}
	seen := make(map[attachment.Sum]bool, len(sums))
	for _, b := range sums {
		sum, err := attachment.SumOf(b)
		if err != nil || seen[sum] {
			continue
		}
		seen[sum] = true
		removed, err := c.removeContent(ctx, sum)
		if err != nil {
			return len(sums), files, err
		}
		if removed {
			files++
		}
	}
	return len(sums), files, nil
}

// removeContent deletes sum's file unless a row names it, under the
// content's lock: an upload of the same bytes waits, then stores its own
// copy. The transaction writes nothing, so its commit cannot undo the delete.
func (c *AttachmentCollector) removeContent(ctx context.Context, sum attachment.Sum) (removed bool, err error) {
	err = c.store.InTx(ctx, func(q *db.Queries) error {
		if err := q.LockAttachmentContent(ctx, sum[:]); err != nil {
			return fmt.Errorf("lock content: %w", err)
		}
		inUse, err := q.AttachmentContentInUse(ctx, sum[:])
		if err != nil || inUse {
			return err
		}
		if err := c.blobs.Delete(sum); err != nil {
			return err
		}
		removed = true
		return nil
	})
	return removed, err
}
