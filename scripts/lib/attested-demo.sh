# The attested part of the main job (sourced by scripts/demo.sh after the manager started and
# `cloak login` ran): a Nitro image converted with the manager's address and CA, registered,
# booted under `cloak run` with simulated evidence before approval (refused: "not whitelisted")
# and after it (the launcher gets the certificate, the app prints its subject).
# Needs: $cloak, $root, $work, $reg, $url (https://127.0.0.1:PORT), $work/manager-tls.crt,
# $work/simulation.pem; and a static cloak-testapp, built here like the static launcher.
attested_nitro_demo() {
  echo "== an attested Nitro image: converted with --manager-url/--manager-ca, booted under qemu with simulated evidence"
  local port=${url##*:}
  local testapp kernel modules app_id cert pcrs task build_json eif=$work/attested.eif
  (cd "$root" && RUSTFLAGS="-C target-feature=+crt-static -C debuginfo=0 -C strip=symbols" \
    cargo build --quiet --release --locked -p cloak-testapp --target x86_64-unknown-linux-gnu)
  testapp=$root/target/x86_64-unknown-linux-gnu/release/cloak-testapp
  kernel=$(bash "$root/scripts/fetch-kernel.sh")
  modules=$(dirname "$kernel")/modules
  # The app: print the subject of the certificate the launcher installed before it started.
  "$cloak" assemble "oci:$work/attested:1" --file "$testapp:/bin/cloak-testapp:0755" \
    --entrypoint /bin/cloak-testapp --entrypoint=--print-subject --entrypoint /etc/app/cert.pem >/dev/null
  app_id=$("$cloak" app create -o json --name demo-attested --input-image "$reg/demo/attested:1" \
    --output-image "$reg/demo/attested-nitro:1" | jq -r .app_id)
  cert='{"issuer": "MANAGER_CA", "subject": "demo-attested-app", "keyType": "ec", "keyParam": {"curve": "P-256"}, "keyPath": "/etc/app/key.pem", "certPath": "/etc/app/cert.pem", "chainPath": "none"}'
  # 10.0.2.2 is this host as qemu's user-mode network shows it to the guest.
  "$cloak" convert --target nitro --quiet --kernel "$kernel" --eif "$eif" \
    --manager-url "https://10.0.2.2:$port" --manager-ca "$work/manager-tls.crt" \
    --manager-app-id "$app_id" --certificates "$cert" --allow-simulated-attestation \
    "oci:$work/attested:1" - > "$work/attested-report.json"
  pcrs=$(jq -c '.attributes.nitro_enclave | {pcr0, pcr1, pcr2}' "$work/attested-report.json")
  build_json=$work/attested-build.json
  jq -n --arg app "$app_id" --argjson pcrs "$pcrs" \
    '{app_id: $app, docker_info: {docker_image_name: "attested", docker_version: "1"},
      attributes: {nitro_enclave: $pcrs},
      advanced_settings: {certificates: [{issuer: "MANAGER_CA", subject: "demo-attested-app"}]}}' > "$build_json"
  task=$("$cloak" build register -o json --file "$build_json" | jq -r .pending_task_id)
  local run=("$cloak" run --target nitro --publish "$(free_port):1" --kernel-modules "$modules"
             --simulation-key "$work/simulation.pem" "$eif")
  echo "-- booting before approval (the launcher is refused; the app does not start)"
  "${run[@]}" > "$work/attested-pending.console" && { echo "the unapproved image ran"; return 1; }
  grep -E "^cloak-launcher: attestation failed" "$work/attested-pending.console" | cut -c1-160
  "$cloak" task approve "$task" | grep -E "^(Approvals|Build)"
  echo "-- booting after approval"
  "${run[@]}" > "$work/attested.console"
  grep -E "^(cloak-launcher: certificate|app: )" "$work/attested.console"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
