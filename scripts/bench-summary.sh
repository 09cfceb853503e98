#!/usr/bin/env bash
# The end of `make bench`: issue 17's table, each figure of this run as a ratio to its ceiling measured in
# the same run (or to its fixed goal), from the `name value` lines casevault-bench and bench-socket.sh
# wrote to FILE. Prints; asserts nothing.
#   scripts/bench-summary.sh FILE
set -euo pipefail
file=${1:?usage: scripts/bench-summary.sh FILE}
awk '
{ v[$1] = $2; known[$1] = 1 }
function have(k) { return (k in known) }
function ratio(a, b) { return (have(a) && have(b) && v[b] > 0) ? sprintf("%.2f x", v[a] / v[b]) : "n/a" }
function val(k, f) { return have(k) ? sprintf(f, v[k]) : "n/a" }
function row(figure, now, goal, verdict) { printf "%-62s %-30s %-22s %s\n", figure, now, goal, verdict }
function met(ok, k) { return !have(k) ? "not measured" : ok ? "met" : "not yet" }
END {
    print ""
    print "Summary (issue 17): this run, each figure against its ceiling from the same run"
    row("figure", "now", "goal", "")
    # Hummingbird alone on the same socket (casevault-floor), the faster of its two set-ups: the most this stack
    # serves, whatever the vault does.
    for (c = 1; c <= 16; c += 15) {
        f = "floor_get_" c
        if (v["floor_pool_get_" c "_rate"] > v[f "_rate"]) f = "floor_pool_get_" c
        v["stack_" c "_rate"] = v[f "_rate"]; v["stack_" c "_p50"] = v[f "_p50"]; v["stack_" c "_cpu_us"] = v[f "_cpu_us"]
        if (have(f "_rate")) { known["stack_" c "_rate"] = 1; known["stack_" c "_p50"] = 1; known["stack_" c "_cpu_us"] = 1 }
    }
    # The bound: the stack alone at 16 connections keeps every core busy (with the load generator); a GET of a
    # sealed, audited record adds at least the CPU of a get in process (one thread) and of the two audit
    # entries of a read, each measured in this run, and nothing is counted for joining them.
    bound = 0
    if (have("stack_16_rate") && v["stack_16_rate"] > 0 && v["cores"] > 0 && have("get_in_process_1_cpu_us") && have("audit_read_cpu_us")) {
        extra = v["get_in_process_1_cpu_us"] + v["audit_read_cpu_us"]
        bound = 1 / (1 / v["stack_16_rate"] + extra / (v["cores"] * 1e6))
    }
    g16 = have("get_16_rate") && v["nginx_get_16_rate"] > 0 ? v["get_16_rate"] / v["nginx_get_16_rate"] : 0
    verdict = met(g16 >= 0.5 && v["get_16_p99"] < 2, "get_16_p99")
    if (verdict == "not yet" && bound > 0 && bound < 0.5 * v["nginx_get_16_rate"]) verdict = sprintf("out of reach here: at most %.2f x", bound / v["nginx_get_16_rate"])
    row("GET 4 KiB over the socket, 16 conn, vs nginx", ratio("get_16_rate", "nginx_get_16_rate") ", p99 " val("get_16_p99", "%.2f ms"), ">= 0.5 x, p99 < 2 ms", verdict)
    verdict = met(v["get_1_p50"] <= 0.1, "get_1_p50")
    if (verdict == "not yet" && have("stack_1_p50") && v["stack_1_p50"] > 0.1) verdict = sprintf("out of reach here: the stack alone %.2f ms", v["stack_1_p50"])
    row("GET, 1 conn: p50 (nginx p50)", val("get_1_p50", "%.2f ms") " (" val("nginx_get_1_p50", "%.2f ms") ")", "p50 <= 0.1 ms", verdict)
    row("  the stack alone (Hummingbird, no vault), 16 conn, vs nginx", ratio("stack_16_rate", "nginx_get_16_rate") "; casevaultd " ratio("get_16_rate", "stack_16_rate") " of it", "ceiling", "")
    row("  the stack alone, 1 conn: p50", val("stack_1_p50", "%.2f ms") "; casevaultd " ratio("get_1_rate", "stack_1_rate") " of its rate", "ceiling", "")
    p16 = have("put_16_rate") && v["put_in_process_16"] > 0 ? v["put_16_rate"] / v["put_in_process_16"] : 0
    row("durable PUT over the socket, 16 conn, vs in process", ratio("put_16_rate", "put_in_process_16"), ">= 0.7 x", met(p16 >= 0.7, have("put_in_process_16") ? "put_16_rate" : "put_in_process_16"))
    d16 = have("put_in_process_16") && v["sqlite_ceiling"] > 0 ? v["put_in_process_16"] / v["sqlite_ceiling"] : 0
    row("durable puts in process, 16 writers, vs plain SQLite", ratio("put_in_process_16", "sqlite_ceiling"), ">= 0.5 x", met(d16 >= 0.5, "put_in_process_16"))
    verdict = met(v["get_in_process_2"] >= 150000, "get_in_process_2")
    if (verdict == "not yet" && have("read_ceiling_2") && v["read_ceiling_2"] > 0 && v["read_ceiling_2"] < 150000) verdict = sprintf("out of reach here: reads and opens alone %.0f/s", v["read_ceiling_2"])
    row("gets in process, 2 threads (ceiling: reads and opens alone)", val("get_in_process_2", "%.0f/s") " (" ratio("get_in_process_2", "read_ceiling_2") ")", ">= 150,000/s", verdict)
    row("  two preads and two opens alone, 2 threads (the opens alone)", val("read_ceiling_2", "%.0f/s") " (" val("open_ceiling_2", "%.0f/s") ")", "ceiling", "")
    verdict = met(v["sweep_seconds"] < 3, "sweep_seconds")
    if (verdict == "not yet" && have("sweep_index_floor_seconds") && v["sweep_index_floor_seconds"] >= 3) verdict = sprintf("out of reach with this index here: its marking and removal alone %.1f s", v["sweep_index_floor_seconds"])
    row("retention sweep, 100,000 expired, writers putting", val("sweep_seconds", "%.1f s"), "< 3 s", verdict)
    row("  its marking and removal alone (SQLite, a copy of the index)", val("sweep_index_floor_seconds", "%.1f s"), "ceiling", "")
    row("puts during that sweep: p99 (max)", val("sweep_put_p99_ms", "%.0f ms") " (" val("sweep_put_max_ms", "%.0f ms") ")", "< 100 ms", met(v["sweep_put_max_ms"] < 100, "sweep_put_max_ms"))
    spread = (have("audited_put_ratio_16_min") && have("audited_put_ratio_16_max")) ? sprintf(" (pairs %.2f to %.2f)", v["audited_put_ratio_16_min"], v["audited_put_ratio_16_max"]) : ""
    row("audited puts vs plain durable puts, 16 clients", val("audited_put_ratio_16", "%.2f x") spread, ">= 0.9 x", met(v["audited_put_ratio_16"] >= 0.9, "audited_put_ratio_16"))
    for (k in v) if (k ~ /_failed$/ && v[k] > 0) printf "warning: %s: %d requests failed; the figures above count only answers\n", substr(k, 1, length(k) - 7), v[k]
    if (have("get_16_cpu_us"))
        printf "where the time goes: casevaultd spends %.0f us of CPU and %.1f context switches per GET at 16 connections (Hummingbird alone %.0f us, nginx %.0f us), %.0f us at 1 (Hummingbird alone %.0f us, nginx %.0f us)\n", v["get_16_cpu_us"], v["get_16_switches"], v["stack_16_cpu_us"], v["nginx_get_16_cpu_us"], v["get_1_cpu_us"], v["stack_1_cpu_us"], v["nginx_get_1_cpu_us"]
    if (bound > 0)
        printf "where the time goes: Hummingbird alone serves %.0f GET/s at 16 connections on %d cores (%.0f us of its CPU each); a GET of a sealed record adds at least a get in process (%.0f us) and the audit entries of a read (%.0f us): at most %.0f/s, %.2f x nginx (goal 0.5 x); casevaultd serves %.2f x that bound, at %.0f us of CPU per GET\n", v["stack_16_rate"], v["cores"], v["stack_16_cpu_us"], v["get_in_process_1_cpu_us"], v["audit_read_cpu_us"], bound, (v["nginx_get_16_rate"] > 0 ? bound / v["nginx_get_16_rate"] : 0), v["get_16_rate"] / bound, v["get_16_cpu_us"]
    if (have("flush_us") && v["flush_us"] > 0 && have("put_in_process_16_per_batch") && v["put_in_process_16_per_batch"] > 0)
        printf "where the time goes: in-process puts at 16 writers commit %.0f batches/s of %.1f puts, %.0f us a batch; each batch makes 1 device flush (the segment), %.0f us here with nothing else writing; plain SQLite makes 1 per 100 rows\n", v["put_in_process_16"] / v["put_in_process_16_per_batch"], v["put_in_process_16_per_batch"], 1e6 * v["put_in_process_16_per_batch"] / v["put_in_process_16"], v["flush_us"]
    if (have("put_in_process_16_flush_us"))
        printf "where the time goes: the leader of a batch at 16 writers: slots %.0f us, keys and frames %.0f us, writes %.0f us, device flush %.0f us, index commit %.0f us and its wait for a checkpoint of the WAL in flight %.0f us; the callers seal their records meanwhile\n", v["put_in_process_16_slots_us"], v["put_in_process_16_frames_us"], v["put_in_process_16_writes_us"], v["put_in_process_16_flush_us"], v["put_in_process_16_commit_us"], v["put_in_process_16_checkpoint_us"]
    if (have("put_in_process_16_bytes_per_put") && have("sqlite_ceiling_bytes_per_row") && v["sqlite_ceiling_bytes_per_row"] > 0)
        printf "where the time goes: a put sends %.1f KiB to the disk (write_bytes in /proc/self/io: frames, key slots, the index WAL and checkpoints together), plain SQLite %.1f KiB a row: %.1f x\n", v["put_in_process_16_bytes_per_put"] / 1024, v["sqlite_ceiling_bytes_per_row"] / 1024, v["put_in_process_16_bytes_per_put"] / v["sqlite_ceiling_bytes_per_row"]
    if (have("put_16_cpu_us") && have("put_in_process_16"))
        printf "where the time goes: casevaultd spends %.0f us of CPU and %.1f context switches per PUT at 16 connections; the store alone puts %.0f/s in process\n", v["put_16_cpu_us"], v["put_16_switches"], v["put_in_process_16"]
    # The same sum for PUT: the stack reading a POST alone (its pool set-up), the filing in process as the
    # socket PUT files (round the same 200 cases; without that figure, the put of the store in process),
    # and two audit entries as a read writes them (a PUT also waits for its request entry to be durable,
    # which costs more: the sum is a floor).
    if (have("floor_post_16_cpu_us") && v["floor_post_16_cpu_us"] > 0 && have("filing_200_cases_cpu_us") && have("filing_put_one_case_cpu_us") && have("filing_put_200_cases_cpu_us") && have("audit_read_cpu_us") && v["put_in_process_16"] > 0) {
        least = v["floor_post_16_cpu_us"] + v["filing_200_cases_cpu_us"] + v["audit_read_cpu_us"]
        printf "where the time goes: a PUT over this stack costs at least Hummingbird reading a POST alone (%.0f us of CPU) + a filing in process round the same 200 cases (%.0f us: a put into one case, as the in-process figure puts, %.0f us and %.1f KiB written; round 200 cases %.0f us and %.1f KiB, its rows likely spread over the pages of the case index; the rest is the filing: the case lock and read, the body read around the content) + two audit entries (%.0f us) = %.0f us; the goal, %.0f/s, needs %.2f of the %d cores the load generator shares; casevaultd spends %.0f us\n", v["floor_post_16_cpu_us"], v["filing_200_cases_cpu_us"], v["filing_put_one_case_cpu_us"], v["filing_put_one_case_bytes_per_put"] / 1024, v["filing_put_200_cases_cpu_us"], v["filing_put_200_cases_bytes_per_put"] / 1024, v["audit_read_cpu_us"], least, 0.7 * v["put_in_process_16"], 0.7 * v["put_in_process_16"] * least / 1e6, v["cores"], v["put_16_cpu_us"]
    } else if (have("floor_post_16_cpu_us") && v["floor_post_16_cpu_us"] > 0 && have("put_in_process_16_cpu_us") && have("audit_read_cpu_us") && v["put_in_process_16"] > 0) {
        least = v["floor_post_16_cpu_us"] + v["put_in_process_16_cpu_us"] + v["audit_read_cpu_us"]
        printf "where the time goes: a PUT over this stack costs at least Hummingbird reading a POST alone (%.0f us of CPU) + the put in process (%.0f us) + two audit entries (%.0f us) = %.0f us; the goal, %.0f/s, needs %.2f of the %d cores the load generator shares; casevaultd spends %.0f us\n", v["floor_post_16_cpu_us"], v["put_in_process_16_cpu_us"], v["audit_read_cpu_us"], least, 0.7 * v["put_in_process_16"], 0.7 * v["put_in_process_16"] * least / 1e6, v["cores"], v["put_16_cpu_us"]
    }
    # Audited puts: what the audit entries add to the CPU of a put, and to the batches every put waits for.
    # The puts use less than the cores (a batch waits for its device flush), so the rate follows the
    # batches: puts a batch over the time its leader takes.
    if (have("audited_put_16_cpu_us") && v["audited_put_16_cpu_us"] > 0 && have("audited_put_16_plain_cpu_us") && have("audit_read_cpu_us")) {
        printf "where the time goes: audited puts at 16 clients in process cost %.1f us of CPU each, plain ones %.1f us: the entries add %.1f us (a read writes its two for %.1f us)", v["audited_put_16_cpu_us"], v["audited_put_16_plain_cpu_us"], v["audited_put_16_cpu_us"] - v["audited_put_16_plain_cpu_us"], v["audit_read_cpu_us"]
        if (have("audited_put_16_batch_us") && v["audited_put_16_batch_us"] > 0 && v["audited_put_16_plain_batch_us"] > 0 && v["audited_put_16_plain_per_batch"] > 0)
            printf "; each put waits for its batch: a leader takes %.0f us audited against %.0f plain (the device flush %.0f against %.0f us, the log riding on it; the rest the leader on cores the entries share) for %.1f puts against %.1f; the batches alone give %.2f x\n", v["audited_put_16_batch_us"], v["audited_put_16_plain_batch_us"], v["audited_put_16_flush_us"], v["audited_put_16_plain_flush_us"], v["audited_put_16_per_batch"], v["audited_put_16_plain_per_batch"], (v["audited_put_16_per_batch"] / v["audited_put_16_batch_us"]) / (v["audited_put_16_plain_per_batch"] / v["audited_put_16_plain_batch_us"])
        else
            printf "\n"
    }
    if (have("sweep_seconds") && have("sweep_alone_seconds"))
    {
        printf "where the time goes: the sweep takes %.1f s with no writer and %.1f s with writers putting: it lets a put in once one has waited 20 ms, after the section of 500 records in hand, and %.0f put batches came between its sections", v["sweep_alone_seconds"], v["sweep_seconds"], v["sweep_put_batches"]
        if (have("sweep_written_mib") && have("sweep_alone_written_mib")) printf "; it writes %.0f MiB with no writer and %.0f MiB with writers (the overwrite of the ciphertext, about 4.2 KiB a record, and the WAL of the index, where each commit writes again the pages of the trees keyed by id or case that it touched)", v["sweep_alone_written_mib"], v["sweep_written_mib"]
        printf "\n"
    }
    if (have("sweep_alone_mark_seconds"))
    {
        printf "where the time goes: the sweep with no writer: listing and marking %.2f s, key slots %.2f s, ciphertext %.2f s, removal from the index %.2f s, certifying at the end %.2f s", v["sweep_alone_mark_seconds"], v["sweep_alone_slots_seconds"], v["sweep_alone_ciphertext_seconds"], v["sweep_alone_removal_seconds"], v["sweep_alone_rest_seconds"]
        if (have("sweep_index_floor_seconds")) printf "; SQLite alone runs the marking and the removal of the same batches, and the truncation of the WAL at the end, on a copy of the index in %.2f s", v["sweep_index_floor_seconds"]
        printf "\n"
    }
    if (have("postgres_insert_16_rate")) {
        print ""
        print "Issue 19: the vault on PostgreSQL, against PostgreSQL itself on this disk (scripts/bench-postgres.sh)"
        row("durable PUT on PostgreSQL over the socket, 16 conn", val("postgres_put_16_rate", "%.0f/s") ", " ratio("postgres_put_16_rate", "postgres_insert_16_rate") " the ceiling", ">= 0.5 x", met(have("postgres_insert_16_rate") && v["postgres_put_16_rate"] >= 0.5 * v["postgres_insert_16_rate"], "postgres_put_16_rate"))
        row("  the same against the synchronous ceiling", ratio("postgres_put_16_rate", "postgres_insert_sync_16_rate"), "", "")
        row("  durable PUT, 1 conn; GET 16 conn (1 conn)", val("postgres_put_1_rate", "%.0f/s") "; " val("postgres_get_16_rate", "%.0f/s") " (" val("postgres_get_1_rate", "%.0f/s") ")", "", "")
        row("  ceiling: plain INSERT of 4 KiB rows, 16 clients (1 client)", val("postgres_insert_16_rate", "%.0f/s") " (" val("postgres_insert_1_rate", "%.0f/s") ")", "ceiling", "")
        row("  the same with a synchronous standby, 16 clients (1 client)", val("postgres_insert_sync_16_rate", "%.0f/s") " (" val("postgres_insert_sync_1_rate", "%.0f/s") ")", "ceiling", "")
        row("  a filing transaction alone (pgbench, standby), 16 clients", val("postgres_filing_sync_16_rate", "%.0f/s") ", " ratio("postgres_filing_sync_16_rate", "postgres_insert_sync_16_rate") " the synchronous ceiling; PUT " ratio("postgres_put_16_rate", "postgres_filing_sync_16_rate") " it", "", "")
        if (have("postgres_filings8_sync_2_rate"))
            row("  filings eight to a transaction (pgbench, standby), 2 clients", val("postgres_filings8_sync_2_rate", "%.0f/s") "; database CPU per filing " val("postgres_filings8_sync_2_database_cpu_us", "%.0f us") ", one a transaction " val("postgres_filing_sync_16_database_cpu_us", "%.0f us"), "", "")
        if (have("postgres_filings8_call_sync_2_rate"))
            row("  filings as calls (pgbench, standby): 16 clients; 8 a call", val("postgres_filing_call_sync_16_rate", "%.0f/s") "; " val("postgres_filings8_call_sync_2_rate", "%.0f/s") "; database CPU per filing " val("postgres_filing_call_sync_16_database_cpu_us", "%.0f us") "; " val("postgres_filings8_call_sync_2_database_cpu_us", "%.0f us"), "", "")
        if (have("postgres_filing_sync_at_put_rate_8_database_cpu_us"))
            row("  the filing at the PUT rate: database CPU per filing; per PUT", val("postgres_filing_sync_at_put_rate_8_database_cpu_us", "%.0f us") "; " val("postgres_put_16_postgres_cpu_us", "%.0f us"), "", "")
        row("  the vault on files and SQLite: PUT over the socket, 16 conn", val("put_16_rate", "%.0f/s") ", " ratio("put_16_rate", "postgres_insert_sync_16_rate") " the synchronous ceiling", "", "")
        if (have("postgres_put_16_machine_cpu_us") && have("postgres_insert_16_database_cpu_us") && v["cores"] > 0 && v["postgres_insert_16_rate"] > 0) {
            printf "where the time goes on PostgreSQL: per PUT at 16 connections, casevaultd %.0f us of CPU, the processes of the database %.0f us, the whole machine %.0f us (per GET %.0f, %.0f and %.0f us); per insert of pgbench, the database %.0f us alone and %.0f us with the standby\n", v["postgres_put_16_daemon_cpu_us"], v["postgres_put_16_postgres_cpu_us"], v["postgres_put_16_machine_cpu_us"], v["postgres_get_16_daemon_cpu_us"], v["postgres_get_16_postgres_cpu_us"], v["postgres_get_16_machine_cpu_us"], v["postgres_insert_16_database_cpu_us"], v["postgres_insert_sync_16_database_cpu_us"]
            budget = v["cores"] * 1e6 / (0.5 * v["postgres_insert_16_rate"])
            printf "where the time goes on PostgreSQL: the goal, %.0f PUT/s, leaves each PUT %.0f us of CPU on the %d cores, load generator included", 0.5 * v["postgres_insert_16_rate"], budget, v["cores"]
            if (v["postgres_insert_sync_16_rate"] > 0)
                printf "; half the synchronous ceiling, %.0f PUT/s, %.0f us", 0.5 * v["postgres_insert_sync_16_rate"], v["cores"] * 1e6 / (0.5 * v["postgres_insert_sync_16_rate"])
            if (have("floor_post_16_cpu_us") && have("audit_read_cpu_us"))
                printf "; Hummingbird reading a POST (%.0f us) and two audit entries (%.0f us) take %.0f us of it, with the insert of the database %.0f us alone and %.0f us with the standby", v["floor_post_16_cpu_us"], v["audit_read_cpu_us"], v["floor_post_16_cpu_us"] + v["audit_read_cpu_us"], v["floor_post_16_cpu_us"] + v["audit_read_cpu_us"] + v["postgres_insert_16_database_cpu_us"], v["floor_post_16_cpu_us"] + v["audit_read_cpu_us"] + v["postgres_insert_sync_16_database_cpu_us"]
            printf "\n"
            # The same sum with the database CPU of a whole filing (the case lock and read besides the insert),
            # sent each way the script measured it: one a transaction as casevaultd commits those under a
            # case lock, eight to a transaction, one a call of a server-side function, eight to a call; against
            # the budget, the cheapest way says what would be left for the work of casevaultd itself (sealing,
            # its statements, the answer).
            if (have("floor_post_16_cpu_us") && have("audit_read_cpu_us") && have("postgres_filing_sync_16_database_cpu_us")) {
                stack = v["floor_post_16_cpu_us"] + v["audit_read_cpu_us"]
                n = split("postgres_filing_sync_16 postgres_filings8_sync_2 postgres_filing_call_sync_16 postgres_filings8_call_sync_2", way, " ")
                split("one a transaction|eight to a transaction|one a call|eight to a call", said, "|")
                best = 0
                measured = 0
                printf "where the time goes on PostgreSQL: with the database CPU of a whole filing in place of an insert, before any work of casevaultd itself, a PUT takes"
                for (i = 1; i <= n; i++) {
                    if (!have(way[i] "_database_cpu_us")) continue
                    cost[i] = stack + v[way[i] "_database_cpu_us"]
                    printf "%s %.0f us %s", (best ? "," : ""), cost[i], said[i]
                    measured++
                    if (!best || cost[i] < cost[best]) best = i
                }
                printf ", against the %.0f us the goal leaves: ", budget
                if (cost[best] >= budget) printf "out of reach here, each of the %d ways measured\n", measured
                else printf "filings sent %s would leave casevaultd %.0f us a PUT, where it spends %.0f\n", said[best], budget - cost[best], v["postgres_put_16_daemon_cpu_us"]
            }
        }
    }
}' "$file"
# The profiles bench-socket.sh took of the socket figures, when perf could run.
if [[ -f "$file.profile" ]]; then cat "$file.profile"; fi
