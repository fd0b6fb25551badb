// Package server owns share's HTTP API: the handlers that serve a Backend
// (a transfer.Store, or a peer) to curl, browsers and share's own client, and
// that client (Client), which is a transfer.Source.
//
// Routes (all under auth unless said; see README for curl examples):
//
//	GET    /healthz                      liveness, no auth
//	GET    /metrics                      Prometheus metrics
//	GET    /                             the web page (package ui); 401 with a Basic challenge and the
//	                                     page as body without a credential, unless PublicRead
//	GET    /ui/{file}                    the page's script, style and icon; no auth
//	POST   /login                        form field token -> a login cookie (session.go); no auth
//	POST   /logout                       end the cookie's session
//	GET    /v1/session                   what the page needs first: logged in?, mode, features; no auth
//	GET    /v1/shares                    list shares (JSON)
//	POST   /v1/shares                    create a share from its manifest (body); the client then PUTs chunks
//	PUT    /v1/shares/{name}             upload one file as the raw body; 201 with the share's JSON
//	GET    /v1/shares/{id}               a file share's bytes (Range, ETag) or a directory share as tar
//	DELETE /v1/shares/{id}               delete a share
//	GET    /v1/shares/{id}/manifest      the manifest, exactly the bytes the ID addresses
//	GET    /v1/shares/{id}/have          which chunks are held: a bitfield, MSB first
//	GET    /v1/shares/{id}/chunks/{n}    chunk n; it may wait for a send slot (Options.SendSlots),
//	                                     then says how long in Server-Timing: slot;dur=MS
//	PUT    /v1/shares/{id}/chunks/{n}    upload chunk n; verified before it is stored
//	POST   /v1/shares/{id}/fetch         a peer fetches a share it lacks from its swarm:
//	                                     202 (under way) or 200 (held), with the share's JSON;
//	                                     a server answers 501
//	POST   /v1/uploads ...               resumable upload sessions, hashed by the server (upload.go)
//
// Errors are JSON {"error": "...", "code": "..."}; the code names the
// transfer sentinel, so the client maps it back (errors.go). Reads need the
// token unless the server runs with PublicRead; writes always do.
//
// # Reads have no effects
//
// No GET or HEAD changes state or starts network work: a peer asked for the
// manifest (or anything) of a share it does not hold answers 404. Getting a
// share from the swarm is the explicit POST /v1/shares/{id}/fetch.
//
// # Authentication
//
// The token is accepted as "Authorization: Bearer TOKEN" or as the password
// of Basic auth (RFC 7617), which browsers prompt for, or as a login cookie
// that the page's form trades it for (session.go). A 401 to a script's
// request (Sec-Fetch-Mode other than navigate) carries no challenge, so the
// browser does not prompt over the page's own login form. A 401 carries one
// WWW-Authenticate header per challenge (RFC 9110 11.6.1), Basic first with
// charset="UTF-8", then Bearer: browsers read only the first challenge of a
// header and prompt only for Basic.
//
// # Cross-site request forgery: one rule for every route
//
// A request is authorised by a Bearer header or by an ambient credential:
// one a browser attaches by itself to any request to this origin, whichever
// page makes it (Basic auth it cached; a session cookie). A request with an
// unsafe method (POST, PUT, DELETE: anything but GET, HEAD, OPTIONS)
// authorised by an ambient credential is refused (403) when a browser says
// it comes from a page of another origin: Sec-Fetch-Site "cross-site" or
// "same-site", or, without that header, an Origin whose host:port is not the
// request's Host. This is net/http's CrossOriginProtection. A request with
// neither header passes: browsers send at least one on every request a page
// can forge, so it comes from a client that is not a browser (curl -u
// :TOKEN), which holds the token anyway. A Bearer request is immune: a page
// cannot make a browser add that header cross-site without a CORS preflight,
// and this server grants none. checkCSRF (routes.go) is the rule; a new
// credential kind is added in credentialOf and classified there.
//
// # DNS rebinding
//
// When Options.AllowedHosts is set (share serve and share peer set it when
// they listen on loopback; share serve --allowed-host adds names and sets it
// on any address), every request's Host must be an allowed name or an IP
// address, and its Origin, if present, this origin, an allowed name or a
// loopback address: a page that points its own DNS name at this server
// still sends that name, and is refused (403). See checkHost.
package server
