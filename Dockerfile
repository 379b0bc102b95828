# The Gingham image: gingham-agent, gingham-cni (copied to the host by the install-cni init
# container), gingham-controllers and ginghamctl. Build with `docker build -t gingham .` from the repository root.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gingham-agent -p gingham-cni -p gingham-controllers -p gingham-cli --bins

FROM debian:bookworm-slim
# The agent talks netlink itself; only natOutgoing needs a tool, nft.
RUN apt-get update && apt-get install -y --no-install-recommends nftables && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gingham-agent /src/target/release/gingham-cni /src/target/release/gingham-controllers /src/target/release/ginghamctl /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/gingham-agent"]
