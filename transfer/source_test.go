package transfer_test

import (
	"testing"

	"github.com/sharefiles/share/transfer"
	"github.com/sharefiles/share/transfer/transfertest"
)

func TestStoreIsASource(t *testing.T) {
	transfertest.Run(t, func(t *testing.T, st *transfer.Store) transfer.Source { return st })
}
