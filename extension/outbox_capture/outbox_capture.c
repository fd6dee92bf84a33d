/*
 * outbox_capture: outbox.capture() as a C trigger function.
 *
 * Does exactly what the PL/pgSQL outbox.capture() of schema 3 does (sql/migrations/
 * 003_captured_events.sql), with the same messages, but writes the event row into
 * outbox.captured_events itself (heap insert plus one insert per index) instead of running an
 * INSERT statement, whose executor set-up is most of what a PL/pgSQL trigger costs per row.
 *
 * So that nothing is skipped silently, it refuses (with a clear error, failing the business
 * statement like any capture error) to write into a captured_events it does not know how to fill:
 * another column layout, a CHECK constraint, a trigger, row-level security, or an index that is
 * not a plain btree over columns.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class_d.h"
#include "catalog/pg_type_d.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(outbox_capture);

/* The columns of outbox.events (and so of captured_events), in order, as schema 3 has them. */
#define NCOLS 9
#define OLD_COLUMN 6
static const struct
{
	const char *name;
	Oid			type;
}			columns[NCOLS] = {
	{"id", INT8OID},
	{"txid", XID8OID},
	{"event_type", TEXTOID},
	{"entity", TEXTOID},
	{"entity_id", TEXTOID},
	{"data", JSONBOID},
	{"old", JSONBOID},
	{"metadata", JSONBOID},
	{"created_at", TIMESTAMPTZOID},
};

/* Per backend: to_jsonb() set up for a row argument, and '{}' as jsonb. */
static FmgrInfo to_jsonb_fn;
static bool to_jsonb_ready = false;
static Datum empty_object;

/* Per backend: the id sequence of the outbox.events it last saw (a migration may recreate it). */
static Oid	cached_events = InvalidOid;
static Oid	cached_ids = InvalidOid;

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
	empty_object = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
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

/* The sequence behind outbox.events.id, which captured_events.id draws from too. */
static Oid
identity_sequence(Oid events)
{
#if PG_VERSION_NUM >= 170000
	Relation	rel = table_open(events, AccessShareLock);
	Oid			seq = getIdentitySequence(rel, 1, false);

	table_close(rel, AccessShareLock);
	return seq;
#else
	return getIdentitySequence(events, 1, false);
#endif
}

static Oid
outbox_relation(Oid nsp, const char *name)
{
	Oid			relid = get_relname_relid(name, nsp);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("outbox.capture: outbox.%s does not exist; run outbox-relay migrate", name)));
	return relid;
}

/*
 * The privilege the PL/pgSQL capture's INSERT INTO outbox.captured_events (event_type, entity,
 * entity_id, data, old) needs: INSERT on the table, or on each of those columns.
 */
static void
check_insert_privilege(Oid target)
{
	static const char *const inserted[] = {"event_type", "entity", "entity_id", "data", "old"};
	Oid			user = GetUserId();
	int			i;

	if (pg_class_aclcheck(target, user, ACL_INSERT) == ACLCHECK_OK)
		return;
	for (i = 0; i < lengthof(inserted); i++)
	{
		AttrNumber	column = get_attnum(target, inserted[i]);

		if (column == InvalidAttrNumber ||
			pg_attribute_aclcheck(target, column, user, ACL_INSERT) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, "captured_events");
	}
}

/* Refuses a captured_events this function could not write the way an INSERT would. */
static void
check_target(Relation target)
{
	TupleDesc	desc = RelationGetDescr(target);
	int			i;
	int			live;

	if (target->rd_rel->relkind != RELKIND_RELATION || target->rd_rel->relam != HEAP_TABLE_AM_OID ||
		target->rd_rel->relispartition)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("outbox.capture (native) writes only into a plain heap table outbox.captured_events; use the PL/pgSQL capture")));
	/* Dropped columns stay in the row as NULLs; the live ones must be schema 3's. */
	for (i = 0, live = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (live == NCOLS || att->attgenerated != '\0' || att->atttypid != columns[live].type ||
			strcmp(NameStr(att->attname), columns[live].name) != 0)
			goto layout;
		/* The one column it may leave NULL. */
		if (live == OLD_COLUMN && att->attnotnull)
			goto layout;
		live++;
	}
	if (live != NCOLS)
		goto layout;
	if (desc->constr && desc->constr->num_check > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("outbox.capture (native) does not check constraints: drop the CHECK constraints of outbox.captured_events or use the PL/pgSQL capture")));
	if (target->trigdesc != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("outbox.capture (native) does not fire triggers: drop the triggers on outbox.captured_events or use the PL/pgSQL capture")));
	if (target->rd_rel->relrowsecurity)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("outbox.capture (native) does not apply row-level security: disable it on outbox.captured_events or use the PL/pgSQL capture")));
	return;

layout:
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("outbox.capture (native) does not know this outbox.captured_events: its columns are not those of schema 3; install the outbox_capture library that matches the schema, or use the PL/pgSQL capture")));
}

/* What an INSERT does after the heap insert: one entry per index, unique ones checked. */
static void
insert_index_entries(Relation target, HeapTuple tuple)
{
	List	   *indexes = RelationGetIndexList(target);
	ListCell   *lc;

	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *info;
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];
		int			k;

		/* One being built concurrently takes entries only once it is ready for them. */
		if (!index->rd_index->indisready)
		{
			index_close(index, NoLock);
			continue;
		}
		info = BuildIndexInfo(index);
		if (index->rd_rel->relam != BTREE_AM_OID || info->ii_Expressions != NIL ||
			info->ii_Predicate != NIL || info->ii_ExclusionOps != NULL ||
			!index->rd_index->indimmediate)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("outbox.capture (native) writes only plain btree indexes over columns, not index %s on outbox.captured_events; drop it or use the PL/pgSQL capture",
							RelationGetRelationName(index))));
		for (k = 0; k < info->ii_NumIndexAttrs; k++)
			values[k] = heap_getattr(tuple, info->ii_IndexAttrNumbers[k],
									 RelationGetDescr(target), &isnull[k]);
		index_insert(index, values, isnull, &tuple->t_self, target,
					 info->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, info);
		index_close(index, NoLock);
	}
	list_free(indexes);
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
	Datum		row_data;
	Datum		old_row = (Datum) 0;
	text	   *key;
	Oid			nsp;
	Oid			events;
	Oid			target_id;
	Relation	target;
	Datum		values[NCOLS];
	bool		nulls[NCOLS] = {false};
	TupleDesc	target_desc;
	Datum	   *row_values;
	bool	   *row_nulls;
	int			i;
	int			live;
	HeapTuple	tuple;

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

	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		row_data = row_to_jsonb(td->tg_newtuple, desc);
		old_row = row_to_jsonb(td->tg_trigtuple, desc);
		if (DatumGetBool(DirectFunctionCall2(jsonb_eq, row_data, old_row)))
			return PointerGetDatum(NULL);	/* an UPDATE that changes nothing emits nothing */
		suffix = ".updated";
	}
	else if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		row_data = row_to_jsonb(td->tg_trigtuple, desc);
		suffix = ".created";
	}
	else
	{
		row_data = row_to_jsonb(td->tg_trigtuple, desc);
		suffix = ".deleted";
	}

	id_column = tg->tgnargs > 1 ? tg->tgargs[1] : "id";
	key = field_text(row_data, id_column);
	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("outbox.capture('%s') on %s.%s: column \"%s\" is missing or NULL; pass the id column as the second argument, e.g. outbox.capture('%s', 'order_no')",
						prefix, get_namespace_name(RelationGetNamespace(rel)),
						RelationGetRelationName(rel), id_column, prefix)));
	if (VARSIZE_ANY_EXHDR(key) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RAISE_EXCEPTION),
				 errmsg("outbox.capture('%s') on %s.%s: column \"%s\" is empty; every captured row needs an id",
						prefix, get_namespace_name(RelationGetNamespace(rel)),
						RelationGetRelationName(rel), id_column)));

	nsp = get_namespace_oid("outbox", false);
	events = outbox_relation(nsp, "events");
	target_id = outbox_relation(nsp, "captured_events");
	check_insert_privilege(target_id);

	target = table_open(target_id, RowExclusiveLock);
	check_target(target);
	if (events != cached_events)
	{
		cached_ids = identity_sequence(events);
		cached_events = events;
	}
	values[0] = Int64GetDatum(nextval_internal(cached_ids, true));
	values[1] = FullTransactionIdGetDatum(GetTopFullTransactionId());
	values[2] = PointerGetDatum(cstring_to_text(psprintf("%s%s", prefix, suffix)));
	values[3] = CStringGetTextDatum(prefix);
	values[4] = PointerGetDatum(key);
	values[5] = row_data;
	values[OLD_COLUMN] = old_row;
	nulls[OLD_COLUMN] = old_row == (Datum) 0;
	values[7] = empty_object;
	values[8] = TimestampTzGetDatum(GetCurrentTimestamp());
	/* Into the table's row, where dropped columns keep their places as NULLs. */
	target_desc = RelationGetDescr(target);
	row_values = palloc(target_desc->natts * sizeof(Datum));
	row_nulls = palloc(target_desc->natts * sizeof(bool));
	for (i = 0, live = 0; i < target_desc->natts; i++)
	{
		if (TupleDescAttr(target_desc, i)->attisdropped)
		{
			row_values[i] = (Datum) 0;
			row_nulls[i] = true;
			continue;
		}
		row_values[i] = values[live];
		row_nulls[i] = nulls[live];
		live++;
	}
	tuple = heap_form_tuple(target_desc, row_values, row_nulls);
	heap_insert(target, tuple, GetCurrentCommandId(true), 0, NULL);
	insert_index_entries(target, tuple);
	table_close(target, NoLock);

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
