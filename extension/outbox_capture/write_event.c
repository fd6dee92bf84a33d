/*
 * write_event: stores one captured event the way `INSERT INTO outbox.capture_sink (event_type,
 * entity, entity_id, data, old) VALUES (...)` would, which is what the PL/pgSQL capture runs.
 *
 * The fast path forms the row and inserts it into the heap and each index itself, skipping the
 * executor set-up that is most of an INSERT statement's cost per row. It applies only where that
 * is exactly what the INSERT would do: outbox.captured_events a plain heap table with the columns
 * and defaults of the schema, no CHECK constraint (an inherited one included), trigger, rule or
 * row-level security, and only plain btree indexes over columns. Anywhere else the event goes
 * through a prepared INSERT statement instead (the slow path), so an addition to the outbox
 * tables never makes a business write fail that the PL/pgSQL capture would let through; a
 * WARNING says so once per backend and reason.
 *
 * What the fast path needs from the table's definition (its path, the id sequence named in the
 * id column's default) is worked out once and forgotten whenever Postgres invalidates the
 * table's relcache entry, which every change to columns, defaults, constraints, triggers, rules
 * or row-level security does. Indexes are looked at on every call, as the INSERT does.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class_d.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type_d.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "nodes/primnodes.h"
#include "rewrite/rewriteHandler.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "outbox_capture.h"

/* Which path an event takes; every value but FAST names why the fast path is off. */
typedef enum Path
{
	FAST,
	SLOW_NOT_A_HEAP,
	SLOW_COLUMNS,
	SLOW_DEFAULTS,
	SLOW_CHECKS,
	SLOW_TRIGGERS,
	SLOW_RULES,
	SLOW_ROW_SECURITY,
	SLOW_INDEX,
	NPATHS
} Path;

/* "... because outbox.captured_events <why>" */
static const char *const why_slow[NPATHS] = {
	[SLOW_NOT_A_HEAP] = "is not a plain heap table",
	[SLOW_COLUMNS] = "has other columns than this library was built for (or \"old\" is NOT NULL)",
	[SLOW_DEFAULTS] = "has other column defaults than this library was built for",
	[SLOW_CHECKS] = "has a CHECK constraint (one on outbox.events without NO INHERIT counts)",
	[SLOW_TRIGGERS] = "has a trigger",
	[SLOW_RULES] = "has a rule",
	[SLOW_ROW_SECURITY] = "has row-level security enabled",
	[SLOW_INDEX] = "has an index that is not a plain btree index over columns",
};
static bool warned[NPATHS];

/* The columns of outbox.events (and so of captured_events), in order, as the schema has them. */
#define NCOLS 9
enum
{
	COL_ID, COL_TXID, COL_EVENT_TYPE, COL_ENTITY, COL_ENTITY_ID, COL_DATA, COL_OLD, COL_METADATA,
	COL_CREATED_AT
};
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

/* Per backend: what the fast path knows of captured_events, until its relcache entry changes. */
static struct
{
	bool		valid;
	Oid			relid;
	Path		path;
	Oid			ids;			/* the sequence of id's default: nextval(ids) */
}			known;

/* Per backend: the slow path's INSERT, prepared once and kept (the plan cache re-plans it). */
static SPIPlanPtr insert_plan;
static Oid	insert_plan_into = InvalidOid;

static void
forget_target(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == known.relid)
		known.valid = false;
}

void
write_event_init(void)
{
	CacheRegisterRelcacheCallback(forget_target, (Datum) 0);
}

static bool
is_call(Node *node, Oid function, int nargs)
{
	return node != NULL && IsA(node, FuncExpr) && ((FuncExpr *) node)->funcid == function &&
		list_length(((FuncExpr *) node)->args) == nargs;
}

/* '{}' as jsonb, made once per backend. */
static Datum
empty_object(void)
{
	static Datum object = (Datum) 0;

	if (object == (Datum) 0)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		object = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
		MemoryContextSwitchTo(old);
	}
	return object;
}

/*
 * The defaults the fast path computes itself, exactly: nextval of a sequence (whichever the
 * default names), pg_current_xact_id(), '{}' and clock_timestamp(). Anything else is the slow
 * path's, whose INSERT evaluates whatever the defaults are.
 */
static bool
defaults_known(Relation target, const AttrNumber *attnums)
{
	Node	   *id = build_column_default(target, attnums[COL_ID]);
	Node	   *metadata = build_column_default(target, attnums[COL_METADATA]);
	Const	   *seq;

	if (!is_call(id, F_NEXTVAL, 1) ||
		!is_call(build_column_default(target, attnums[COL_TXID]), F_PG_CURRENT_XACT_ID, 0) ||
		!is_call(build_column_default(target, attnums[COL_CREATED_AT]), F_CLOCK_TIMESTAMP, 0) ||
		metadata == NULL || !IsA(metadata, Const) ||
		((Const *) metadata)->consttype != JSONBOID || ((Const *) metadata)->constisnull ||
		!DatumGetBool(DirectFunctionCall2(jsonb_eq, ((Const *) metadata)->constvalue,
										  empty_object())))
		return false;
	seq = (Const *) linitial(((FuncExpr *) id)->args);
	if (!IsA(seq, Const) || seq->consttype != REGCLASSOID || seq->constisnull)
		return false;
	known.ids = DatumGetObjectId(seq->constvalue);
	return true;
}

/* Whether an INSERT into target would do more than the fast path does, and if so why. */
static Path
path_for(Relation target)
{
	TupleDesc	desc = RelationGetDescr(target);
	AttrNumber	attnums[NCOLS];
	int			i;
	int			live;

	if (target->rd_rel->relkind != RELKIND_RELATION || target->rd_rel->relam != HEAP_TABLE_AM_OID ||
		target->rd_rel->relispartition)
		return SLOW_NOT_A_HEAP;
	/* Dropped columns stay in the row as NULLs; the live ones must be the schema's. */
	for (i = 0, live = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (live == NCOLS || att->attgenerated != '\0' || att->atttypid != columns[live].type ||
			strcmp(NameStr(att->attname), columns[live].name) != 0 ||
			(live == COL_OLD && att->attnotnull))
			return SLOW_COLUMNS;
		attnums[live++] = att->attnum;
	}
	if (live != NCOLS)
		return SLOW_COLUMNS;
	if (desc->constr && desc->constr->num_check > 0)
		return SLOW_CHECKS;
	if (target->trigdesc != NULL)
		return SLOW_TRIGGERS;
	if (target->rd_rules != NULL)
		return SLOW_RULES;
	if (target->rd_rel->relrowsecurity)
		return SLOW_ROW_SECURITY;
	return defaults_known(target, attnums) ? FAST : SLOW_DEFAULTS;
}

/*
 * The privilege the INSERT needs: INSERT on `into` (the sink view, or captured_events of a
 * schema before it), or on each column it names.
 */
static void
check_insert_privilege(Oid into, ObjectType kind)
{
	static const char *const named[] = {"event_type", "entity", "entity_id", "data", "old"};
	Oid			user = GetUserId();
	int			i;

	if (pg_class_aclcheck(into, user, ACL_INSERT) == ACLCHECK_OK)
		return;
	for (i = 0; i < lengthof(named); i++)
	{
		AttrNumber	column = get_attnum(into, named[i]);

		if (column == InvalidAttrNumber ||
			pg_attribute_aclcheck(into, column, user, ACL_INSERT) != ACLCHECK_OK)
			aclcheck_error(ACLCHECK_NO_PRIV, kind, get_rel_name(into));
	}
}

/*
 * Opens the indexes an INSERT would write (those ready for entries) into *indexes and *infos and
 * returns how many, or -1 if one is of a kind the fast path does not write (all closed again).
 */
static int
open_indexes(Relation target, Relation **indexes_out, IndexInfo ***infos_out)
{
	List	   *oids = RelationGetIndexList(target);
	Relation   *indexes = palloc(Max(list_length(oids), 1) * sizeof(Relation));
	IndexInfo **infos = palloc(Max(list_length(oids), 1) * sizeof(IndexInfo *));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, oids)
	{
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *info;

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
		{
			index_close(index, NoLock);
			while (n > 0)
				index_close(indexes[--n], NoLock);
			list_free(oids);
			return -1;
		}
		indexes[n] = index;
		infos[n++] = info;
	}
	list_free(oids);
	*indexes_out = indexes;
	*infos_out = infos;
	return n;
}

/* The row, the heap insert and the index entries, as ExecInsert would make them. */
static void
insert_directly(Relation target, const CapturedEvent *event, Relation *indexes,
				IndexInfo **infos, int nindexes)
{
	TupleDesc	desc = RelationGetDescr(target);
	Datum		values[NCOLS];
	bool		nulls[NCOLS] = {false};
	Datum	   *row_values = palloc(desc->natts * sizeof(Datum));
	bool	   *row_nulls = palloc(desc->natts * sizeof(bool));
	HeapTuple	tuple;
	int			i;
	int			live;

	values[COL_ID] = Int64GetDatum(nextval_internal(known.ids, true));
	values[COL_TXID] = FullTransactionIdGetDatum(GetTopFullTransactionId());
	values[COL_EVENT_TYPE] = PointerGetDatum(event->event_type);
	values[COL_ENTITY] = PointerGetDatum(event->entity);
	values[COL_ENTITY_ID] = PointerGetDatum(event->entity_id);
	values[COL_DATA] = event->data;
	values[COL_OLD] = event->old;
	nulls[COL_OLD] = event->old == (Datum) 0;
	values[COL_METADATA] = empty_object();
	values[COL_CREATED_AT] = TimestampTzGetDatum(GetCurrentTimestamp());
	/* Into the table's row, where dropped columns keep their places as NULLs. */
	for (i = 0, live = 0; i < desc->natts; i++)
	{
		if (TupleDescAttr(desc, i)->attisdropped)
		{
			row_values[i] = (Datum) 0;
			row_nulls[i] = true;
			continue;
		}
		row_values[i] = values[live];
		row_nulls[i] = nulls[live];
		live++;
	}
	tuple = heap_form_tuple(desc, row_values, row_nulls);
	heap_insert(target, tuple, GetCurrentCommandId(true), 0, NULL);
	for (i = 0; i < nindexes; i++)
	{
		Datum		keys[INDEX_MAX_KEYS];
		bool		key_nulls[INDEX_MAX_KEYS];
		int			k;

		for (k = 0; k < infos[i]->ii_NumIndexAttrs; k++)
			keys[k] = heap_getattr(tuple, infos[i]->ii_IndexAttrNumbers[k], desc, &key_nulls[k]);
		index_insert(indexes[i], keys, key_nulls, &tuple->t_self, target,
					 infos[i]->ii_Unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, infos[i]);
		index_close(indexes[i], NoLock);
	}
}

/* The slow path: the INSERT statement itself, with all it does. */
static void
insert_with_statement(Oid into, const CapturedEvent *event)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', event->old == (Datum) 0 ? 'n' : ' '};
	int			result;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "outbox.capture (native): SPI_connect failed");
	if (insert_plan == NULL || insert_plan_into != into)
	{
		Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID};
		char	   *sql = psprintf("INSERT INTO outbox.%s (event_type, entity, entity_id, data, old) VALUES ($1, $2, $3, $4, $5)",
								   quote_identifier(get_rel_name(into)));
		SPIPlanPtr	plan = SPI_prepare(sql, 5, types);

		if (plan == NULL)
			elog(ERROR, "outbox.capture (native): preparing \"%s\" failed: %s", sql,
				 SPI_result_code_string(SPI_result));
		if (insert_plan != NULL)
			SPI_freeplan(insert_plan);
		SPI_keepplan(plan);
		insert_plan = plan;
		insert_plan_into = into;
	}
	values[0] = PointerGetDatum(event->event_type);
	values[1] = PointerGetDatum(event->entity);
	values[2] = PointerGetDatum(event->entity_id);
	values[3] = event->data;
	values[4] = event->old;
	result = SPI_execute_plan(insert_plan, values, nulls, false, 0);
	if (result < 0)
		elog(ERROR, "outbox.capture (native): the INSERT failed: %s", SPI_result_code_string(result));
	SPI_finish();
}

static void
warn_once(Path path)
{
	if (warned[path])
		return;
	warned[path] = true;
	ereport(WARNING,
			(errmsg("outbox.capture (native) stores events through an INSERT statement, at about twice its usual cost, because outbox.captured_events %s",
					why_slow[path]),
			 errhint("Events are the same either way; undo that change to get the fast path back.")));
}

void
write_event(Oid nsp, const CapturedEvent *event)
{
	Oid			target_id = outbox_relation(nsp, "captured_events");
	Oid			sink = get_relname_relid("capture_sink", nsp);
	Oid			into = OidIsValid(sink) ? sink : target_id;
	Relation	target;
	Path		path;

	/* (opening it processes pending invalidations, which may forget what is known) */
	target = table_open(target_id, RowExclusiveLock);
	if (!known.valid || known.relid != target_id)
	{
		known.relid = target_id;
		known.path = path_for(target);
		known.valid = true;
	}
	path = known.path;
	if (path == FAST)
	{
		Relation   *indexes;
		IndexInfo **infos;
		int			n;

		check_insert_privilege(into, OidIsValid(sink) ? OBJECT_VIEW : OBJECT_TABLE);
		n = open_indexes(target, &indexes, &infos);
		if (n >= 0)
		{
			insert_directly(target, event, indexes, infos, n);
			table_close(target, NoLock);
			return;
		}
		path = SLOW_INDEX;
	}
	table_close(target, NoLock);
	warn_once(path);
	insert_with_statement(into, event);
}
