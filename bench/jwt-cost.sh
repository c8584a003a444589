#!/usr/bin/env bash
# What a forged token costs, per algorithm, and what the crypto crates' opt-level changes
# (issue 13, item 4; results in bench/results/jwt-verify-cost.md). For each build of BUILDS
# (default "s 3 chosen": every crypto crate at opt-level "s", as every dependency off the hot
# path; every one at 3; and Cargo.toml's choice as it stands), it builds the gateway and
# examples/jwt_cost in release mode (a target directory per build: target/jwt-cost-BUILD),
# prints the stripped binary's size, and runs jwt_cost: the CPU time of verifying a forged
# token in-process, and the gateway's CPU per refused handshake. Then OpenSSL's verify on the
# same key sizes (`openssl speed`, CPU time too), as the reference.
#
#   bench/jwt-cost.sh                # about 3 x 3 min of builds + 1 min of runs per build
#   BUILDS=chosen bench/jwt-cost.sh  # the build as Cargo.toml has it, only
set -euo pipefail
cd "$(dirname "$0")/.."
BUILDS=${BUILDS:-"s 3 chosen"}
# jsonwebtoken's rust_crypto backend and the math under it (Cargo.lock).
CRYPTO="rsa num-bigint-dig num-integer num-traits num-iter crypto-bigint p256 p384 ecdsa
        primeorder elliptic-curve ff group ed25519-dalek curve25519-dalek sha2 hmac digest
        block-buffer subtle signature"
keys=$(mktemp -d)
trap 'rm -rf "$keys"' EXIT

gen() { openssl genpkey "$@" -out "$keys/$name.pem" 2>/dev/null
        openssl pkey -in "$keys/$name.pem" -pubout -out "$keys/$name.pub.pem"; }
name=rsa2048 gen -algorithm RSA -pkeyopt rsa_keygen_bits:2048
name=rsa4096 gen -algorithm RSA -pkeyopt rsa_keygen_bits:4096
name=p256 gen -algorithm EC -pkeyopt ec_paramgen_curve:P-256
name=p384 gen -algorithm EC -pkeyopt ec_paramgen_curve:P-384
name=ed25519 gen -algorithm ED25519

for build in $BUILDS; do
    config=()
    case $build in
        s) value='"s"' ;;
        3) value=3 ;;
        *) value="" ;;
    esac
    if [ -n "$value" ]; then
        for c in $CRYPTO; do config+=(--config "profile.release.package.$c.opt-level=$value"); done
    fi
    target=target/jwt-cost-$build
    cargo build -q --release --target-dir "$target" ${config[@]+"${config[@]}"} \
        --bin kairos-gateway --example jwt_cost
    echo "== build $build: stripped binary $(stat -c %s "$target/release/kairos-gateway") bytes"
    "$target/release/examples/jwt_cost" "$keys" --gateway "$target/release/kairos-gateway"
done

echo "== OpenSSL $(openssl version | cut -d' ' -f2): verify, µs each (openssl speed -seconds 2)"
openssl speed -seconds 2 rsa2048 rsa4096 ecdsap256 ecdsap384 ed25519 2>/dev/null |
    awk '/^rsa +[0-9]+ bits/ { printf "RSA, %s bits: %.1f\n", $2, 1e6 / $NF }
         /bits ecdsa \(nistp/ { printf "ECDSA %s: %.1f\n", $4, 1e6 / $NF }
         /bits EdDSA \(Ed25519\)/ { printf "Ed25519: %.1f\n", 1e6 / $NF }'
