# The share image: the static share binary on an empty base. Nothing is
# pulled from a registry. Build it with `make image`, which compiles the
# binary with the local Go toolchain (CGO_ENABLED=0) and assembles the build
# context in build/image: share, natrouter, etc/passwd, etc/group, data/,
# shared/, tmp/.
FROM scratch
COPY etc/ /etc/
COPY --chown=10001:10001 data/ /data/
# /shared: a volume peers of a cluster share (the bootstrap peer's addresses).
COPY --chown=10001:10001 shared/ /shared/
COPY tmp/ /tmp/
COPY share /share
# natrouter: the home routers of the p2p-nat demo (docker-compose.yml).
COPY natrouter /natrouter
# share runs as an ordinary user; its data (shares, token, peer key) lives in
# the /data volume.
USER 10001:10001
ENV PATH=/ HOME=/data SHARE_DATA=/data
VOLUME /data
WORKDIR /data
# 7070: the HTTP API (share serve, or a peer's local API); 7071: libp2p (TCP, QUIC).
EXPOSE 7070/tcp 7071/tcp 7071/udp
# scratch has no shell or curl: the binary checks its own API.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 CMD ["/share", "health", "--server", "http://127.0.0.1:7070", "--timeout", "2s"]
ENTRYPOINT ["/share"]
CMD ["serve"]
