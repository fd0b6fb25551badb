// Package server owns share's HTTP API: the handlers that serve a Backend
// (a transfer.Store, or a peer) to curl, browsers and share's own client, and
// that client (Client), which is a transfer.Source.
//
// Routes (all under auth unless said; see README for curl examples):
//
//	GET    /healthz                      liveness, no auth
//	GET    /metrics                      Prometheus metrics
//	GET    /                             an HTML index for browsers
//	GET    /v1/shares                    list shares (JSON)
//	POST   /v1/shares                    create a share from its manifest (body); the client then PUTs chunks
//	PUT    /v1/shares/{name}             upload one file as the raw body; 201 with the share's JSON
//	GET    /v1/shares/{id}               a file share's bytes (Range, ETag) or a directory share as tar
//	DELETE /v1/shares/{id}               delete a share
//	GET    /v1/shares/{id}/manifest      the manifest, exactly the bytes the ID addresses
//	GET    /v1/shares/{id}/have          which chunks are held: a bitfield, MSB first
//	GET    /v1/shares/{id}/chunks/{n}    chunk n
//	PUT    /v1/shares/{id}/chunks/{n}    upload chunk n; verified before it is stored
//
// Errors are JSON {"error": "...", "code": "..."}; the code names the
// transfer sentinel, so the client maps it back (errors.go). Reads need the
// token unless the server runs with PublicRead; writes always do.
package server
