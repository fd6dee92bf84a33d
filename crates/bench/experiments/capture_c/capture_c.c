/* Prototype: outbox.capture as a C trigger through SPI (measurement only). */
#include "postgres.h"
#include "fmgr.h"
#include "access/htup_details.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/rel.h"
#include "utils/regproc.h"
#include "catalog/namespace.h"

PG_MODULE_MAGIC;
PG_FUNCTION_INFO_V1(capture_c);

typedef struct { Oid relid; SPIPlanPtr plan; } PlanEntry;
static HTAB *plans = NULL;
static Oid flag_seq = InvalidOid;

static bool same_row(HeapTuple a, HeapTuple b)
{
    HeapTupleHeader ha = a->t_data, hb = b->t_data;
    if (a->t_len - ha->t_hoff != b->t_len - hb->t_hoff) return false;
    if ((ha->t_infomask & HEAP_HASNULL) != (hb->t_infomask & HEAP_HASNULL)) return false;
    if (HeapTupleHeaderGetNatts(ha) != HeapTupleHeaderGetNatts(hb)) return false;
    if ((ha->t_infomask & HEAP_HASNULL) &&
        memcmp(ha->t_bits, hb->t_bits, BITMAPLEN(HeapTupleHeaderGetNatts(ha))) != 0) return false;
    return memcmp((char *) ha + ha->t_hoff, (char *) hb + hb->t_hoff, a->t_len - ha->t_hoff) == 0;
}

Datum
capture_c(PG_FUNCTION_ARGS)
{
    TriggerData *td = (TriggerData *) fcinfo->context;
    Trigger *tg;
    Relation rel;
    TupleDesc desc;
    HeapTuple row, old = NULL;
    const char *suffix, *idcol;
    char *key, *etype;
    int fno;
    PlanEntry *entry;
    bool found;
    Datum values[5];
    char nulls[5] = {' ', ' ', ' ', ' ', ' '};

    if (!CALLED_AS_TRIGGER(fcinfo))
        elog(ERROR, "capture_c: not called as a trigger");
    tg = td->tg_trigger;
    rel = td->tg_relation;
    if (tg->tgnargs < 1 || tg->tgargs[0][0] == '\0')
        ereport(ERROR, (errmsg("outbox.capture on %s needs the event prefix", RelationGetRelationName(rel))));
    if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
        ereport(ERROR, (errmsg("outbox.capture on %s must be an AFTER ... FOR EACH ROW trigger", RelationGetRelationName(rel))));
    desc = RelationGetDescr(rel);
    if (TRIGGER_FIRED_BY_INSERT(td->tg_event)) { row = td->tg_trigtuple; suffix = ".created"; }
    else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
    {
        row = td->tg_newtuple; old = td->tg_trigtuple; suffix = ".updated";
        if (same_row(row, old)) return PointerGetDatum(NULL);
    }
    else { row = td->tg_trigtuple; suffix = ".deleted"; }

    idcol = tg->tgnargs > 1 ? tg->tgargs[1] : "id";
    fno = SPI_fnumber(desc, idcol);
    key = fno > 0 ? SPI_getvalue(row, desc, fno) : NULL;
    if (key == NULL || key[0] == '\0')
        ereport(ERROR, (errmsg("outbox.capture('%s') on %s: column \"%s\" is missing, NULL or empty", tg->tgargs[0], RelationGetRelationName(rel), idcol)));
    etype = psprintf("%s%s", tg->tgargs[0], suffix);

    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
    if (plans == NULL)
    {
        HASHCTL ctl;
        memset(&ctl, 0, sizeof(ctl));
        ctl.keysize = sizeof(Oid);
        ctl.entrysize = sizeof(PlanEntry);
        plans = hash_create("outbox capture plans", 16, &ctl, HASH_ELEM | HASH_BLOBS);
    }
    entry = hash_search(plans, &rel->rd_id, HASH_ENTER, &found);
    if (!found)
    {
        Oid types[5] = {TEXTOID, TEXTOID, TEXTOID, rel->rd_rel->reltype, rel->rd_rel->reltype};
        SPIPlanPtr plan = SPI_prepare(
            "INSERT INTO outbox.captured_events (event_type, entity, entity_id, data, old) "
            "VALUES ($1, $2, $3, to_jsonb($4), to_jsonb($5))", 5, types);
        if (plan == NULL) { hash_search(plans, &rel->rd_id, HASH_REMOVE, NULL); elog(ERROR, "SPI_prepare failed"); }
        SPI_keepplan(plan);
        entry->plan = plan;
    }
    values[0] = CStringGetTextDatum(etype);
    values[1] = CStringGetTextDatum(tg->tgargs[0]);
    values[2] = CStringGetTextDatum(key);
    values[3] = heap_copy_tuple_as_datum(row, desc);
    if (old) values[4] = heap_copy_tuple_as_datum(old, desc); else { values[4] = (Datum) 0; nulls[4] = 'n'; }
    if (SPI_execute_plan(entry->plan, values, nulls, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "capture insert failed");
    SPI_finish();

    if (!OidIsValid(flag_seq))
        flag_seq = DatumGetObjectId(DirectFunctionCall1(regclassin, CStringGetDatum("outbox.notify_wanted")));
    if (DatumGetInt64(DirectFunctionCall1(pg_sequence_last_value, ObjectIdGetDatum(flag_seq))) == 1)
        Async_Notify("outbox_events", "");
    return PointerGetDatum(NULL);
}
