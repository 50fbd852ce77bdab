#!/usr/bin/env bash
# Lays a local copy of the RustSec advisory database out where cargo-deny looks for it, so
# `cargo deny --offline check advisories` runs without any network access.
#
#   scripts/advisory-db.sh SOURCE CHECKOUT
#
# SOURCE is a RustSec advisory-db tree (a git checkout or plain files, even read-only).
# CHECKOUT is the directory cargo-deny opens: `<db-path>/<repo name>-<hash of db-url>`
# (deny.toml sets db-path and db-urls; the Makefile names the directory).
#
# cargo-deny wants a git checkout: it reads the commit time of HEAD to refuse a stale
# database (deny.toml: maximum-db-staleness). Plain files are committed into a fresh
# repository dated as the snapshot (the `(YYYY-MM-DD)` in SNAPSHOT.txt when there is one,
# otherwise the newest file), so the staleness check judges the data, not the copy.
# Exits 2 when SOURCE holds no database.
set -euo pipefail

src="${1:?usage: advisory-db.sh SOURCE CHECKOUT}"
dest="${2:?usage: advisory-db.sh SOURCE CHECKOUT}"

[ -d "$src/crates" ] || { echo "no advisory database at $src" >&2; exit 2; }

snapshot_date=""
if [ -f "$src/SNAPSHOT.txt" ]; then
    snapshot_date="$(grep -oE '\([0-9]{4}-[0-9]{2}-[0-9]{2}\)' "$src/SNAPSHOT.txt" | head -n1 | tr -d '()' || true)"
fi
if [ -n "$snapshot_date" ]; then
    stamp="${snapshot_date}T00:00:00Z"
else
    newest="$(find "$src/crates" -type f -printf '%T@\n' | sort -n | tail -n1 | cut -d. -f1)"
    stamp="$(date -u -d "@${newest}" +%Y-%m-%dT%H:%M:%SZ)"
fi

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
cp -R "$src" "$dest"
chmod -R u+w "$dest"
rm -rf "$dest/.git"

git_() {
    git -C "$dest" -c core.hooksPath=/dev/null -c commit.gpgsign=false \
        -c user.name=advisory-db -c user.email=advisory-db@localhost "$@"
}
git_ init -q -b main
git_ add -A
GIT_AUTHOR_DATE="$stamp" GIT_COMMITTER_DATE="$stamp" git_ commit -q -m "RustSec advisory-db snapshot"
# cargo-deny also takes the time of .git/HEAD as the fetch time when it is newer.
touch -d "$stamp" "$dest/.git/HEAD"
echo "advisory database: $(head -n1 "$src/SNAPSHOT.txt" 2>/dev/null | cut -d";" -f1 || echo "$src") (dated $stamp)"
