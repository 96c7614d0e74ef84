# shellcheck shell=bash
# inventory.sh — reads a kvferry cluster inventory (deploy/inventory.example.yaml documents it)
# into bash arrays. Sourced by scripts/smart_{deploy,run,stop}.sh; needs bash 4.3+, awk, nothing
# else (no yq, no python).
#
# The inventory is a documented subset of YAML, parsed in two passes:
#   1. awk (kvf_yaml_flatten) checks the structure and flattens the file into one record per
#      value, "LINE<TAB>PATH<TAB>VALUE": PATH is `key`, `section.key` or `section.N.key`, VALUE is
#      "=text" for a scalar, "{" for a mapping section, "[" for a list section or "-" for a list
#      item. It accepts: top-level `key: value`; top-level `key:` followed by an indented block
#      that is either a mapping of scalars or a list of mappings of scalars ("- key: value");
#      plain, 'single-' and "double-quoted" scalars; full-line and trailing `# comments`; a
#      leading `---`. It refuses, with file:line, everything else: tabs, flow style ([ ] { }),
#      anchors, tags, block scalars (| >), deeper nesting, duplicate keys, bad indentation.
#   2. bash (kvf_inventory_load) checks the schema: unknown keys, types, ranges, required keys,
#      unique names, one port used once per host, and resolves defaults.
#
# After kvf_inventory_load FILE:
#   KVF_PROCS            process names, "orchestrator" first, then agents in file order
#   KVF_AGENTS           agent names in file order
#   KVF_P[NAME.key]      per process: kind (orchestrator|agent), host, ssh_user, ssh_port,
#                        install_dir, address, port (HTTP or control), line; agents also: role,
#                        transport, transport_address, transport_port, gpu, nic, netdev,
#                        kv_blocks, threads
#   KVF_TARGETS          deploy targets "user@host:ssh_port:install_dir", in first-use order
#   KVF_T[TARGET.key]    user, host, ssh_port, dir, procs (space-separated names)
#   KVF_MODEL KVF_MODEL_NAME KVF_BLOCK_TOKENS KVF_HASH_SEED KVF_LOG_LEVEL KVF_POLICY
#   KVF_ORCH_URL         http://address:port of the orchestrator as seen from this machine
#   KVF_INVENTORY        absolute path of the file

KVF_TOP_KEYS="model model_name block_tokens hash_seed log_level defaults orchestrator agents"
KVF_DEFAULTS_KEYS="ssh_user ssh_port install_dir transport kv_blocks threads"
KVF_ORCH_KEYS="host ssh_user ssh_port install_dir address port policy"
KVF_AGENT_KEYS="name host ssh_user ssh_port install_dir address role control_port transport_port
  transport transport_address gpu nic netdev kv_blocks threads"

# Flattens the YAML subset described above; prints "FILE:LINE: what" and fails on anything else.
kvf_yaml_flatten() {
  # q is a single quote (awk programs cannot hold one inside shell single quotes).
  awk -v file="$1" -v q="'" '
    function fail(msg) { printf "%s:%d: %s\n", file, NR, msg > "/dev/stderr"; bad = 1; exit 1 }
    function emit(path, value) {
      if (path in seen) fail("duplicate key " q path q " (first on line " seen[path] ")")
      seen[path] = NR
      printf "%d\t%s\t%s\n", NR, path, value
    }
    # Parses the text after "key:"; returns "=value", or "" when there is no value.
    function scalar(s,    c, out, i, ch) {
      sub(/^ +/, "", s)
      if (s == "" || s ~ /^#/) return ""
      c = substr(s, 1, 1)
      if (c == "\"" || c == q) {
        out = ""
        for (i = 2; i <= length(s); i++) {
          ch = substr(s, i, 1)
          if (c == "\"" && ch == "\\") {
            ch = substr(s, ++i, 1)
            if (ch != "\"" && ch != "\\") fail("only \\\" and \\\\ escapes are supported in double-quoted strings")
            out = out ch
          } else if (ch == q && c == q && substr(s, i + 1, 1) == q) {
            out = out ch; i++
          } else if (ch == c) {
            s = substr(s, i + 1)
            if (s !~ /^ *(#.*)?$/) fail("unexpected text after the closing quote: " s)
            return "=" out
          } else out = out ch
        }
        fail("unterminated quoted string")
      }
      if (index("[]{}&*!|>%@`", c)) fail(q c q " starts YAML syntax this inventory does not support (flow lists or maps, anchors, tags, block scalars); quote the value if it is a string")
      sub(/ +#.*$/, "", s); sub(/ +$/, "", s)
      return "=" s
    }
    # Splits "key: rest" into the global k and the returned rest; fails on anything else.
    function keyline(s) {
      if (!match(s, /^[A-Za-z_][A-Za-z0-9_]*:( |$)/)) {
        if (substr(s, 1, 1) == "\"" || substr(s, 1, 1) == q) fail("quoted keys are not supported")
        fail("expected \"key: value\", got: " s)
      }
      k = substr(s, 1, RLENGTH); sub(/: ?$/, "", k)
      return substr(s, RLENGTH + 1)
    }
    BEGIN { sect = ""; started = 0 }
    {
      sub(/\r$/, "")
      if (index($0, "\t")) fail("tab character; indent with spaces")
      if ($0 ~ /^ *(#.*)?$/) next
      if (!started && $0 ~ /^--- *(#.*)?$/) { started = 1; next }
      started = 1
      if ($0 ~ /^(---|\.\.\.)/ || $0 ~ /^%/) fail("multiple documents and directives are not supported")
      match($0, /^ */); indent = RLENGTH; s = substr($0, indent + 1)
      is_item = (s ~ /^-( |$)/)

      # Column 0: a top-level key, unless it is an item of a list written flush left.
      if (indent == 0 && !(is_item && sect != "" && kind != "map" && sindent <= 0)) {
        if (sect != "" && kind == "") emit(sect, "=")   # "key:" with nothing under it
        sect = ""
        rest = keyline(s)
        v = scalar(rest)
        if (v == "") { sect = k; sline = NR; kind = ""; sindent = -1; item = -1 }
        else emit(k, v)
        next
      }
      if (sect == "") fail("unexpected indentation")
      if (sindent < 0) {
        sindent = indent; kind = is_item ? "list" : "map"
        if (sect in seen) fail("duplicate key " q sect q " (first on line " seen[sect] ")")
        seen[sect] = sline
        printf "%d\t%s\t%s\n", sline, sect, (kind == "list" ? "[" : "{")
      }
      if (is_item) {
        if (kind != "list") fail("a list item (\"- \") inside the mapping " q sect q)
        if (indent != sindent) fail("list items of " q sect q " must start in column " sindent + 1)
        s = substr(s, 2)
        match(s, /^ */); iindent = indent + 1 + RLENGTH; s = substr(s, RLENGTH + 1)
        if (s == "" || s ~ /^#/) fail("each item of " q sect q " must begin on its \"- \" line with \"key: value\"")
        if (s ~ /^-( |$)/) fail("nested lists are not supported")
        item++
        emit(sect "." item, "-")
      } else if (kind == "map") {
        if (indent != sindent) fail("bad indentation in " q sect q " (expected " sindent " spaces; nested sections are not supported)")
      } else {
        if (indent != iindent) fail("bad indentation in item " item " of " q sect q " (expected " iindent " spaces; nested sections are not supported)")
      }
      rest = keyline(s)
      v = scalar(rest)
      if (v == "") v = "="
      emit(sect "." (kind == "list" ? item "." : "") k, v)
    }
    END {
      if (bad) exit 1
      if (sect != "" && kind == "") emit(sect, "=")
    }
  ' "$1"
}

# shellcheck disable=SC2034 # the KVF_* results are read by the scripts that source this file
# kvf_inventory_load FILE: parses and validates FILE; prints every problem as FILE:LINE: what
# and returns 1 if there is any.
kvf_inventory_load() {
  local file="$1" flat line path value
  [ -f "$file" ] || { echo "$file: no such file" >&2; return 1; }
  KVF_INVENTORY="$(cd "$(dirname "$file")" && pwd)/$(basename "$file")"
  flat="$(kvf_yaml_flatten "$file")" || return 1

  declare -gA KVF_V=() KVF_L=() KVF_P=() KVF_T=()
  declare -ga KVF_PROCS=() KVF_AGENTS=() KVF_TARGETS=() KVF_ERRORS=()
  local n_agents=0
  while IFS=$'\t' read -r line path value; do
    [ -n "$path" ] || continue
    KVF_V[$path]="$value"
    KVF_L[$path]="$line"
  done <<<"$flat"

  _kvf_err() { KVF_ERRORS+=("$file:$1: $2"); }
  # Checks the keys under PREFIX (e.g. "agents.3.") against the allowed list.
  _kvf_keys() {
    local prefix="$1" where="$2" allowed p key
    allowed=" $(tr -s ' \n' '  ' <<<"$3")"
    for p in "${!KVF_V[@]}"; do
      [[ "$p" == "$prefix"* ]] || continue
      key="${p#"$prefix"}"
      [[ "$key" == *.* ]] && continue
      [[ "$allowed" == *" $key "* ]] ||
        _kvf_err "${KVF_L[$p]}" "unknown key '$key' in $where (allowed:${allowed% })"
    done
  }

  # Top level and section shapes.
  _kvf_keys "" "the top level" "$KVF_TOP_KEYS"
  local sect want
  for sect in defaults orchestrator agents; do
    want="{"; [ "$sect" = agents ] && want="["
    if [ -n "${KVF_V[$sect]+x}" ] && [ "${KVF_V[$sect]}" != "$want" ] && [ "${KVF_V[$sect]}" != "=" ]; then
      if [ "$want" = "[" ]; then _kvf_err "${KVF_L[$sect]}" "agents: must be a list of agents (\"- name: ...\")"
      else _kvf_err "${KVF_L[$sect]}" "$sect: must be a mapping of keys"; fi
    fi
  done
  _kvf_keys "defaults." "defaults" "$KVF_DEFAULTS_KEYS"
  _kvf_keys "orchestrator." "orchestrator" "$KVF_ORCH_KEYS"
  while [ -n "${KVF_V[agents.$n_agents]+x}" ]; do
    _kvf_keys "agents.$n_agents." "agents[$n_agents]" "$KVF_AGENT_KEYS"
    n_agents=$((n_agents + 1))
  done

  # _kvf_get PATH DEFAULT: the scalar at PATH (without its "=") or DEFAULT.
  _kvf_get() {
    local v="${KVF_V[$1]-}"
    if [ -n "$v" ] && [ "$v" != "=" ]; then printf '%s' "${v#=}"; else printf '%s' "$2"; fi
  }
  # _kvf_check PATH VALUE WHAT REGEX: reports VALUE unless it matches REGEX.
  _kvf_check() {
    [[ "$2" =~ $4 ]] && return 0
    _kvf_err "${KVF_L[$1]:-${KVF_L[${1%.*}]:-1}}" "$(_kvf_pretty "$1"): '$2' is not $3"
    return 1
  }
  _kvf_range() {
    _kvf_check "$1" "$2" "a number" '^[0-9]{1,9}$' || return 1
    if [ $((10#$2)) -lt "$3" ] || [ $((10#$2)) -gt "$4" ]; then
      _kvf_err "${KVF_L[$1]:-1}" "$(_kvf_pretty "$1"): $2 is out of range ($3..$4)"
      return 1
    fi
  }
  _kvf_pretty() { sed -E 's/^agents\.([0-9]+)/agents[\1]/' <<<"$1"; }

  local re_host='^[A-Za-z0-9_][A-Za-z0-9_.:-]*$' re_user='^[A-Za-z_][A-Za-z0-9_.-]*$'
  local re_dir='^/[A-Za-z0-9_./+-]*$' re_name='^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'

  # Cluster-wide settings.
  KVF_MODEL="$(_kvf_get model "")"
  if [ -z "$KVF_MODEL" ]; then
    _kvf_err "${KVF_L[model]:-1}" "model: the GGUF file to serve is required"
  else
    case "$KVF_MODEL" in /*) ;; *) KVF_MODEL="$(dirname "$KVF_INVENTORY")/$KVF_MODEL" ;; esac
    _kvf_check model "$(basename "$KVF_MODEL")" "a plain file name (letters, digits, _ . + -)" \
      '^[A-Za-z0-9_.+-]+$' || true
  fi
  KVF_MODEL_NAME="$(_kvf_get model_name "")"
  _kvf_check model_name "$KVF_MODEL_NAME" "printable text without quotes or backslashes" \
    '^[^"\\[:cntrl:]]*$' || true
  KVF_BLOCK_TOKENS="$(_kvf_get block_tokens 16)"
  _kvf_range block_tokens "$KVF_BLOCK_TOKENS" 1 65536 || true
  KVF_HASH_SEED="$(_kvf_get hash_seed "")"
  _kvf_check hash_seed "$KVF_HASH_SEED" '32 hex digits (or "")' '^([0-9A-Fa-f]{32})?$' || true
  KVF_LOG_LEVEL="$(_kvf_get log_level info)"
  _kvf_check log_level "$KVF_LOG_LEVEL" "trace, debug, info, warn, error or off" \
    '^(trace|debug|info|warn|error|off)$' || true

  local d_user d_port d_dir d_transport d_kv d_threads
  d_user="$(_kvf_get defaults.ssh_user "$(id -un)")"
  d_port="$(_kvf_get defaults.ssh_port 22)"
  d_dir="$(_kvf_get defaults.install_dir /opt/kvferry)"
  d_transport="$(_kvf_get defaults.transport tcp)"
  d_kv="$(_kvf_get defaults.kv_blocks "")"
  d_threads="$(_kvf_get defaults.threads "")"

  # Fills KVF_P[NAME.*] with the connection settings under PREFIX, defaults applied.
  _kvf_conn() {
    local name="$1" prefix="$2" v
    v="$(_kvf_get "${prefix}host" "")"
    if [ -z "$v" ]; then
      _kvf_err "${KVF_L[${prefix%.}]:-1}" "$(_kvf_pretty "${prefix%.}"): host is missing (the address to ssh to)"
    else _kvf_check "${prefix}host" "$v" "a host name or IP address" "$re_host" || true; fi
    KVF_P[$name.host]="$v"
    v="$(_kvf_get "${prefix}ssh_user" "$d_user")"; KVF_P[$name.ssh_user]="$v"
    _kvf_check "${prefix}ssh_user" "$v" "a user name" "$re_user" || true
    v="$(_kvf_get "${prefix}ssh_port" "$d_port")"; KVF_P[$name.ssh_port]="$v"
    _kvf_range "${prefix}ssh_port" "$v" 1 65535 || true
    v="$(_kvf_get "${prefix}install_dir" "$d_dir")"; v="${v%/}"; KVF_P[$name.install_dir]="$v"
    _kvf_check "${prefix}install_dir" "$v" "an absolute path (letters, digits, _ . / + -)" \
      "$re_dir" || true
    v="$(_kvf_get "${prefix}address" "${KVF_P[$name.host]}")"; KVF_P[$name.address]="$v"
    _kvf_check "${prefix}address" "$v" "an IP address or host name" "$re_host" || true
    KVF_P[$name.line]="${KVF_L[${prefix%.}]:-1}"
  }

  # The orchestrator.
  KVF_PROCS=(orchestrator)
  KVF_P[orchestrator.kind]=orchestrator
  if [ "${KVF_V[orchestrator]-}" != "{" ]; then
    [ -n "${KVF_V[orchestrator]+x}" ] ||
      _kvf_err 1 "orchestrator: section is missing (host and port of the HTTP front)"
  fi
  _kvf_conn orchestrator orchestrator.
  KVF_P[orchestrator.port]="$(_kvf_get orchestrator.port "")"
  if [ -z "${KVF_P[orchestrator.port]}" ]; then
    _kvf_err "${KVF_L[orchestrator]:-1}" "orchestrator: port is missing (the HTTP port clients use)"
  else _kvf_range orchestrator.port "${KVF_P[orchestrator.port]}" 1 65535 || true; fi
  KVF_POLICY="$(_kvf_get orchestrator.policy kvferry)"
  _kvf_check orchestrator.policy "$KVF_POLICY" \
    "round_robin, least_loaded, sglang_cache_aware, dynamo_kv_cost or kvferry" \
    '^(round_robin|least_loaded|sglang_cache_aware|dynamo_kv_cost|kvferry)$' || true

  # The agents.
  [ "$n_agents" -gt 0 ] || _kvf_err "${KVF_L[agents]:-1}" "agents: at least one prefill and one decode agent are required"
  local i p name v can_prefill=0 can_decode=0
  declare -A names_seen=()
  for ((i = 0; i < n_agents; i++)); do
    p="agents.$i."
    name="$(_kvf_get "${p}name" "")"
    if [ -z "$name" ]; then
      _kvf_err "${KVF_L[agents.$i]}" "agents[$i]: name is missing"
      name="agents[$i]"
    elif ! _kvf_check "${p}name" "$name" "a name of 1-64 letters, digits, _ . - (starting with a letter or digit)" "$re_name"; then
      name="agents[$i]"
    elif [ "$name" = orchestrator ]; then
      _kvf_err "${KVF_L[${p}name]}" "agents[$i].name: 'orchestrator' is reserved"
    elif [ -n "${names_seen[$name]-}" ]; then
      _kvf_err "${KVF_L[${p}name]}" "agents[$i].name: '$name' is already used on line ${names_seen[$name]}"
      name="agents[$i]"
    fi
    names_seen[$name]="${KVF_L[${p}name]:-}"
    KVF_AGENTS+=("$name"); KVF_PROCS+=("$name")
    KVF_P[$name.kind]=agent
    KVF_P[$name.index]="$i"
    _kvf_conn "$name" "$p"
    case "${KVF_P[$name.address]}" in
      0.0.0.0 | :: | "[::]")
        _kvf_err "${KVF_L[${p}address]}" "agents[$i].address: the orchestrator calls the agent there; use the host's address, not a wildcard" ;;
    esac
    v="$(_kvf_get "${p}role" "")"; KVF_P[$name.role]="$v"
    if [ -z "$v" ]; then _kvf_err "${KVF_L[agents.$i]}" "agents[$i] ($name): role is missing (prefill, decode or both)"
    elif _kvf_check "${p}role" "$v" "prefill, decode or both" '^(prefill|decode|both)$'; then
      [ "$v" = decode ] || can_prefill=1
      [ "$v" = prefill ] || can_decode=1
    fi
    for v in control_port transport_port; do
      KVF_P[$name.$v]="$(_kvf_get "$p$v" "")"
      if [ -z "${KVF_P[$name.$v]}" ]; then _kvf_err "${KVF_L[agents.$i]}" "agents[$i] ($name): $v is missing"
      else _kvf_range "$p$v" "${KVF_P[$name.$v]}" 1 65535 || true; fi
    done
    KVF_P[$name.port]="${KVF_P[$name.control_port]}"
    v="$(_kvf_get "${p}transport" "$d_transport")"; KVF_P[$name.transport]="$v"
    _kvf_check "${p}transport" "$v" "tcp or verbs" '^(tcp|verbs)$' || true
    v="$(_kvf_get "${p}transport_address" "${KVF_P[$name.address]}")"; KVF_P[$name.transport_address]="$v"
    _kvf_check "${p}transport_address" "$v" "an IP address" "$re_host" || true
    v="$(_kvf_get "${p}gpu" "")"; KVF_P[$name.gpu]="$v"
    _kvf_check "${p}gpu" "$v" "a GPU index or UUID list (CUDA_VISIBLE_DEVICES)" '^[A-Za-z0-9,-]*$' || true
    v="$(_kvf_get "${p}nic" "")"; KVF_P[$name.nic]="$v"
    _kvf_check "${p}nic" "$v" "an RDMA device name (ibv_devices)" '^[A-Za-z0-9_.:-]*$' || true
    v="$(_kvf_get "${p}netdev" "")"; KVF_P[$name.netdev]="$v"
    _kvf_check "${p}netdev" "$v" "a network interface name" '^[A-Za-z0-9_.:-]*$' || true
    v="$(_kvf_get "${p}kv_blocks" "$d_kv")"; KVF_P[$name.kv_blocks]="$v"
    [ -z "$v" ] || _kvf_range "${p}kv_blocks" "$v" 1 16777216 || true
    v="$(_kvf_get "${p}threads" "$d_threads")"; KVF_P[$name.threads]="$v"
    [ -z "$v" ] || _kvf_range "${p}threads" "$v" 0 4096 || true
  done
  if [ "$n_agents" -gt 0 ]; then
    [ "$can_prefill" = 1 ] || _kvf_err "${KVF_L[agents]}" "agents: none can prefill (role prefill or both)"
    [ "$can_decode" = 1 ] || _kvf_err "${KVF_L[agents]}" "agents: none can decode (role decode or both)"
  fi

  # Each port once per host; one deploy target per (user, host, ssh port, install dir).
  declare -A port_owner=()
  local proc key owner where t
  for proc in "${KVF_PROCS[@]}"; do
    for key in port control_port transport_port; do
      v="${KVF_P[$proc.$key]-}"
      [[ "$v" =~ ^[0-9]{1,9}$ ]] || continue
      [ "$proc" != orchestrator ] && [ "$key" = port ] && continue   # = control_port
      if [ "$proc" = orchestrator ]; then where="orchestrator.$key"
      else where="agents[${KVF_P[$proc.index]}].$key"; fi
      owner="${port_owner[${KVF_P[$proc.host]}|$((10#$v))]-}"
      if [ -n "$owner" ]; then
        _kvf_err "$(_kvf_line_of "$where")" "$where: port $v is already used on host ${KVF_P[$proc.host]} by ${owner} (line $(_kvf_line_of "$owner"))"
      else
        port_owner[${KVF_P[$proc.host]}|$((10#$v))]="$where"
      fi
    done
    t="${KVF_P[$proc.ssh_user]}@${KVF_P[$proc.host]}:${KVF_P[$proc.ssh_port]}:${KVF_P[$proc.install_dir]}"
    KVF_P[$proc.target]="$t"
    if [ -z "${KVF_T[$t.dir]+x}" ]; then
      KVF_TARGETS+=("$t")
      KVF_T[$t.user]="${KVF_P[$proc.ssh_user]}"; KVF_T[$t.host]="${KVF_P[$proc.host]}"
      KVF_T[$t.ssh_port]="${KVF_P[$proc.ssh_port]}"; KVF_T[$t.dir]="${KVF_P[$proc.install_dir]}"
      KVF_T[$t.procs]=""
    fi
    KVF_T[$t.procs]+="${KVF_T[$t.procs]:+ }$proc"
  done

  local orch_host="${KVF_P[orchestrator.address]}"
  case "$orch_host" in 0.0.0.0 | :: | "[::]") orch_host="${KVF_P[orchestrator.host]}" ;; esac
  KVF_ORCH_CONNECT="$(kvf_hostport "$orch_host" "${KVF_P[orchestrator.port]}")"
  KVF_ORCH_URL="${KVFERRY_ORCHESTRATOR_URL:-http://$KVF_ORCH_CONNECT}"

  if [ "${#KVF_ERRORS[@]}" -gt 0 ]; then
    printf '%s\n' "${KVF_ERRORS[@]}" | sort -t: -k2,2n -s >&2
    return 1
  fi
}

# The inventory line of "orchestrator.KEY" or "agents[I].KEY", for messages.
_kvf_line_of() {
  local path
  path="$(sed -E 's/^agents\[([0-9]+)\]/agents.\1/' <<<"$1")"
  echo "${KVF_L[$path]:-${KVF_L[${path%.*}]:-1}}"
}

# "host:port", with IPv6 addresses in brackets.
kvf_hostport() {
  local h="${1#[}"
  h="${h%]}"
  case "$h" in *:*) printf '[%s]:%s' "$h" "$2" ;; *) printf '%s:%s' "$h" "$2" ;; esac
}
