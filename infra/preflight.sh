#!/bin/sh
# Refuse to start the stack on an unset, empty or placeholder credential.
#   sh infra/preflight.sh NAME...   # exit 1 naming each NAME whose value is empty or `change-me*`
# The compose file's `${VAR:?...}` already stops on an unset or empty variable; this one-shot
# check (the `preflight` service, which every other service waits for) also catches the
# placeholders that infra/.env.example ships, which would otherwise start a stack whose
# passwords are public. POSIX sh, so it runs on busybox.
set -u

[ "$#" -gt 0 ] || { echo "preflight: no variable names given" >&2; exit 2; }
bad=0
for name in "$@"; do
    case "$name" in
        *[!A-Za-z0-9_]* | [0-9]*) echo "preflight: '$name' is not a variable name" >&2; exit 2 ;;
    esac
    eval "value=\${$name-}"
    # shellcheck disable=SC2154  # `value` is set by the eval above
    if [ -z "$(printf '%s' "$value" | tr -d '[:space:]')" ]; then  # blanks count as empty
        echo "preflight: $name is empty; set it in infra/.env (see infra/.env.example)" >&2
        bad=1
    elif case "$value" in *change-me*) true ;; *) false ;; esac; then
        echo "preflight: $name still holds the change-me placeholder from infra/.env.example" >&2
        bad=1
    fi
done
[ "$bad" -eq 0 ] && echo "preflight: $# variables set"
exit "$bad"
