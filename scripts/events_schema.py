"""The source of etc/events.schema.json: every eventid's required and optional
fields, one type per field name.  Edit here, then
    python3 scripts/events_schema.py > etc/events.schema.json
(test_events_schema checks that the two agree)."""
import json
S={"type":"string"}; I={"type":"integer"}; B={"type":"boolean"}
def en(*v): return {"type":"string","enum":list(v)}
fields={
 "eventid": {"type":"string","description":"what happened; one schema per value below"},
 "timestamp": {"type":"string","pattern":"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$","description":"ISO 8601 UTC, microseconds"},
 "message": {"type":"string","description":"one human line (Cowrie's convention); attacker bytes escaped"},
 "sensor": S,
 "session": {"type":"string","pattern":"^[0-9a-f]{16}$"},
 "src_ip": S, "src_port": I, "dst_ip": S, "dst_port": I,
 "protocol": en("smtp"),
 "client_name": {"type":"string","description":"the verified client name, or unknown"},
 "listener": S, "tls_mode": en("plain","starttls","implicit"),
 "version": S, "cipher": S, "bits": I, "sni": S,
 "mode": {"type":"string","description":"session.tls: implicit or starttls; relay events: live or dry-run","enum":["implicit","starttls","live","dry-run"]},
 "mechanism": S, "username": S, "password": S, "authzid": S, "challenge": S, "raw": S,
 "success": B, "outcome": S, "policy_line": I,
 "queue_id": S, "sha256": {"type":"string","pattern":"^[0-9a-f]{64}$"}, "size": I,
 "helo": S, "mail_from": S, "rcpt_to": {"type":"array","items":S},
 "transfer": en("DATA","BDAT"),
 "rule": S, "tag": S, "publish": B, "relay": B, "matched": B,
 "reply_code": I, "reply_text": S,
 "input": S,
 "duration_ms": {"type":"integer","minimum":0},
 "reason": S, "commands": I, "mails": I, "errors": I,
 "anomalies": {"type":"array","items":S},
 "stage": {"type":"string","description":"rule.match: the rules stage; relay.attempt: the SMTP client's stage"},
 "source": S,
 "evidence": {"type":"array","items":{"type":"object","properties":{"matcher":S,"where":S,"what":S},"additionalProperties":False}},
 "test_mode": B, "verdict": S,
 "caps": {"type":"object","additionalProperties":False,"properties":{k:I for k in
   ["day","per_day","hour","per_hour","client_ip","per_client_ip","client_network","per_client_network","recipient","per_recipient","domain","per_domain"]}|{"seen_sha256":B}},
 "rcpt": S, "target_rcpt": S, "relay_queue_id": S, "mx": S, "preference": I, "ip": S, "port": I,
 "status": {"type":"string","description":"a keyword; the explanation is in status_text",
            "enum":["delivered","tempfail","permfail","failed","refused","error","dry-run","unknown"]},
 "status_text": S, "code": I, "reply": S, "error": S, "starttls_offered": B,
 "tls": {"type":"object","additionalProperties":False,"properties":{"version":S,"cipher":S,"bits":I,"verified":B,"peer":S}},
 "listeners": S, "output": S, "channel": S,
 "known_user": en("same password","other password"),
 "tls_active": B,
 # fosr.mail.parsed (issue 15): nested Elastic Common Schema objects, as the
 # analysis writes them (src/analysis.c); the names are used nowhere else
 "email": {"type":"object","description":"ECS email.*: subject, from/to/reply_to/cc addresses, message_id, x_mailer, attachments[].file.{name,mime_type,size,hash.{md5,sha1,sha256,ssdeep}}"},
 "url": {"type":"object","description":"ECS url.*: full, domain (arrays, normalised)"},
 "related": {"type":"object","description":"ECS related.*: ip, hosts, hash (arrays)"},
 "user_agent": {"type":"object","description":"ECS user_agent.original: the User-Agent header"},
 "fosr": {"type":"object","description":"what ECS has no name for: received chain, return_path, body_addresses, text_ssdeep, campaign {id,count,new,score}, archive flags, analysis {parsed,parts,depth,mime_warnings,limits}"},
}
conn=["session","src_ip","src_port","dst_ip","dst_port","protocol"]
base=["eventid","timestamp","sensor","message"]
relayb=conn+["sha256","queue_id","source","mode","test_mode"]
events={
 "fosr.session.connect": (conn+["listener","tls_mode"], []),
 "fosr.session.tls": (conn+["mode"], ["client_name","version","cipher","bits","sni"]),
 "fosr.login.attempt": (conn+["mechanism","username","password","raw","success","outcome"], ["client_name","authzid","challenge","policy_line","known_user"]),
 "fosr.mail.received": (conn+["queue_id","sha256","size","helo","mail_from","rcpt_to","transfer"], ["client_name","rule","tag","publish","reply_code"]),
 "fosr.command.unknown": (conn+["input"], ["client_name"]),
 "fosr.command.unauthenticated": (conn+["input","tls_active"], ["client_name","reply","mail_from"]),
 "fosr.session.closed": (conn+["duration_ms","reason","commands","mails","errors"], ["client_name","anomalies"]),
 "fosr.session.refused": (["src_ip","reason"], ["session","src_port","dst_ip","dst_port","protocol","client_name"]),
 "fosr.rule.match": (conn+["stage","rule","relay","publish","source","evidence"], ["client_name","tag","reply_code","reply_text","sha256","queue_id"]),
 "fosr.relay.decision": (relayb+["verdict","reason","rule","matched","relay"], ["client_name","tag","evidence","caps","publish"]),
 "fosr.relay.attempt": (relayb+["rcpt","target_rcpt","relay_queue_id","mx","ip","port","status"], ["client_name","preference","status_text","stage","code","reply","error","starttls_offered","tls","publish"]),
 "fosr.relay.result": (relayb+["status","reason","rule","relay_queue_id"], ["client_name","publish"]),
 "fosr.collector.start": (["version","listeners"], []),
 "fosr.collector.stop": ([], []),
 "fosr.output.skipped": (["output","channel","sha256","reason"], []),
 "fosr.mail.parsed": (["sha256","size","email","url","fosr","related"], ["user_agent","publish"]),
}
used=set()
allof=[]
for ev,(req,opt) in events.items():
    req=base+req; names=req+opt; used|=set(names)
    for n in names: assert n in fields,(ev,n)
    allof.append({"if":{"properties":{"eventid":{"const":ev}}},
                  "then":{"required":req,"propertyNames":{"enum":sorted(set(names))}}})
unused=set(fields)-used
assert not unused, unused
fields["eventid"]["enum"]=list(events)
schema={
 "$schema":"https://json-schema.org/draft/2020-12/schema",
 "$id":"https://github.com/fosr-collector/fosr-collector/etc/events.schema.json",
 "title":"fosr-collector event log (JSON lines, one object per line)",
 "description":"Every event fosr-collector writes. A field name has one type across every eventid (the properties below are shared), so an index mapping never conflicts; each eventid lists the fields it must and may carry. Strings hold attacker bytes escaped to valid UTF-8.",
 "type":"object",
 "required":base,
 "properties":fields,
 "allOf":allof,
}
if __name__ == "__main__":
    print(json.dumps(schema, indent=1))
