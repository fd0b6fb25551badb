// Package e2e holds the multi-host tests: it runs the docker-compose
// clusters of docker-compose.yml, each node a container with an address of
// its own, and breaks them — stops the server or a peer, cuts a peer off the
// network. The tests build only with the e2e tag and skip without a Docker
// engine: run them with `make e2e`, which builds the image first.
package e2e
