/*
 * outbox_capture: outbox.capture() as a C trigger function.
 *
 * Does exactly what the PL/pgSQL outbox.capture() (sql/migrations/005_capture_sink.sql) does,
 * with the same messages and the same events. This file is the trigger: it checks how it was
 * declared, turns the row into the event's fields and decides the NOTIFY. Storing the event is
 * write_event.c's job: directly into the heap and its indexes where that is exactly what an
 * INSERT would do, through an INSERT statement where it is not.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type_d.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "outbox_capture.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Two names, one function. `migrate --capture native` of this release asks for
 * outbox_capture_schema5, so a library that predates outbox.capture_sink (whose privilege check
 * would refuse every producer there) cannot be switched on by mistake; outbox_capture keeps the
 * definitions made by earlier releases working while the new library is installed before
 * migrating.
 */
PG_FUNCTION_INFO_V1(outbox_capture);
PG_FUNCTION_INFO_V1(outbox_capture_schema5);

/* Per backend: to_jsonb() set up for a row argument. */
static FmgrInfo to_jsonb_fn;
static bool to_jsonb_ready = false;

void
_PG_init(void)
{
	write_event_init();
}

static void
prepare_backend(void)
{
	MemoryContext old;
	FuncExpr   *call;

	if (to_jsonb_ready)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	fmgr_info(F_TO_JSONB, &to_jsonb_fn);
	/* to_jsonb() looks at its argument's declared type: any row type takes the same path. */
	call = makeFuncExpr(F_TO_JSONB, JSONBOID,
						list_make1(makeNullConst(RECORDOID, -1, InvalidOid)),
						InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
	fmgr_info_set_expr((Node *) call, &to_jsonb_fn);
	MemoryContextSwitchTo(old);
	to_jsonb_ready = true;
}

static Datum
row_to_jsonb(HeapTuple row, TupleDesc desc)
{
	return FunctionCall1(&to_jsonb_fn, heap_copy_tuple_as_datum(row, desc));
}

/* row_data ->> column: NULL when the key is missing or JSON null. */
static text *
field_text(Datum object, const char *column)
{
	LOCAL_FCINFO(call, 2);
	Datum		result;

	InitFunctionCallInfoData(*call, NULL, 2, InvalidOid, NULL, NULL);
	call->args[0].value = object;
	call->args[0].isnull = false;
	call->args[1].value = CStringGetTextDatum(column);
	call->args[1].isnull = false;
	result = jsonb_object_field_text(call);
	return call->isnull ? NULL : DatumGetTextPP(result);
}

/* pg_sequence_last_value(seq) = 1 (NULL, before the first setval, is not 1). */
static bool
flag_is_set(Oid seq)
{
	LOCAL_FCINFO(call, 1);
	Datum		result;

	InitFunctionCallInfoData(*call, NULL, 1, InvalidOid, NULL, NULL);
	call->args[0].value = ObjectIdGetDatum(seq);
	call->args[0].isnull = false;
	result = pg_sequence_last_value(call);
	return !call->isnull && DatumGetInt64(result) == 1;
}

Oid
outbox_relation(Oid nsp, const char *name)
{
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("outbox.capture: outbox.%s does not exist; run outbox-relay migrate", name)));
	return relid;
}

Datum
outbox_capture(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Trigger    *tg;
	Relation	rel;
	TupleDesc	desc;
	const char *prefix;
	const char *suffix;
	const char *id_column;
	CapturedEvent event;
	Oid			nsp;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("outbox.capture can only be called as a trigger")));
	tg = td->tg_trigger;
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);
	prefix = tg->tgnargs > 0 ? tg->tgargs[0] : "";
	if (prefix[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("outbox.capture on %s.%s needs the event prefix as its argument, e.g. EXECUTE FUNCTION outbox.capture('order')",
						get_namespace_name(RelationGetNamespace(rel)), RelationGetRelationName(rel))));
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("outbox.capture on %s.%s must be an AFTER ... FOR EACH ROW trigger",
						get_namespace_name(RelationGetNamespace(rel)), RelationGetRelationName(rel))));
	prepare_backend();

	event.old = (Datum) 0;
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		event.data = row_to_jsonb(td->tg_newtuple, desc);
		event.old = row_to_jsonb(td->tg_trigtuple, desc);
		if (DatumGetBool(DirectFunctionCall2(jsonb_eq, event.data, event.old)))
			return PointerGetDatum(NULL);	/* an UPDATE that changes nothing emits nothing */
		suffix = ".updated";
	}
	else if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		event.data = row_to_jsonb(td->tg_trigtuple, desc);
		suffix = ".created";
	}
	else
	{
		event.data = row_to_jsonb(td->tg_trigtuple, desc);
		suffix = ".deleted";
	}

	id_column = tg->tgnargs > 1 ? tg->tgargs[1] : "id";
	event.entity_id = field_text(event.data, id_column);
	if (event.entity_id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("outbox.capture('%s') on %s.%s: column \"%s\" is missing or NULL; pass the id column as the second argument, e.g. outbox.capture('%s', 'order_no')",
						prefix, get_namespace_name(RelationGetNamespace(rel)),
						RelationGetRelationName(rel), id_column, prefix)));
	if (VARSIZE_ANY_EXHDR(event.entity_id) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("outbox.capture('%s') on %s.%s: column \"%s\" is empty; every captured row needs an id",
						prefix, get_namespace_name(RelationGetNamespace(rel)),
						RelationGetRelationName(rel), id_column)));
	event.event_type = cstring_to_text(psprintf("%s%s", prefix, suffix));
	event.entity = cstring_to_text(prefix);

	nsp = get_namespace_oid("outbox", false);
	write_event(nsp, &event);

	/*
	 * What the NOTIFY trigger on outbox.events does for other inserts: only while the router asks
	 * for it (Postgres folds a transaction's duplicate notifications into one).
	 */
	if (flag_is_set(outbox_relation(nsp, "notify_wanted")))
	{
		PreventCommandDuringRecovery("NOTIFY");
		Async_Notify("outbox_events", "");
	}
	return PointerGetDatum(NULL);
}

Datum
outbox_capture_schema5(PG_FUNCTION_ARGS)
{
	return outbox_capture(fcinfo);
}
