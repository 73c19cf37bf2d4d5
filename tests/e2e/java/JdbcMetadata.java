// JDBC DatabaseMetaData against ebb (PostgreSQL's JDBC driver, Debian's
// libpostgresql-jdbc-java): product, catalogs, schemas, tables, columns with
// types, sizes, nullability and defaults, primary keys, index info, imported
// keys and type info, plus a prepared insert and select. Run by the end-to-end
// test `jdbc_database_metadata` with the port as the only argument; exits
// non-zero with a message on the first mismatch.

import java.sql.*;
import java.util.*;

public class JdbcMetadata {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static List<String> rows(ResultSet rs, String... columns) throws SQLException {
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            StringJoiner row = new StringJoiner(" ");
            for (String c : columns) {
                row.add(String.valueOf(rs.getString(c)));
            }
            out.add(row.toString());
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/postgres";
        try (Connection c = DriverManager.getConnection(url, "postgres", "")) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE jd_orders (region varchar(8) NOT NULL, id int, total numeric(10,2) DEFAULT 0, note text, qty bigint DEFAULT 5, PRIMARY KEY (region, id))");
                s.execute("CREATE TABLE jd_log (line text)");
            }
            DatabaseMetaData m = c.getMetaData();
            check(m.getDatabaseProductName().equals("PostgreSQL"), "product " + m.getDatabaseProductName());
            check(m.getDatabaseMajorVersion() == 15, "major version " + m.getDatabaseMajorVersion());
            check(rows(m.getCatalogs(), "TABLE_CAT").equals(List.of("postgres")), "catalogs");
            check(rows(m.getSchemas(), "TABLE_SCHEM").contains("public"), "schemas");

            List<String> tables = rows(m.getTables(null, "public", "jd_%", new String[] {"TABLE"}), "TABLE_NAME", "TABLE_TYPE");
            check(tables.equals(List.of("jd_log TABLE", "jd_orders TABLE")), "tables " + tables);

            List<String> columns = rows(m.getColumns(null, "public", "jd_orders", "%"),
                "COLUMN_NAME", "DATA_TYPE", "TYPE_NAME", "COLUMN_SIZE", "DECIMAL_DIGITS", "IS_NULLABLE", "COLUMN_DEF", "ORDINAL_POSITION");
            List<String> expected = List.of(
                "region 12 varchar 8 0 NO null 1",
                "id 4 int4 10 0 NO null 2",
                "total 2 numeric 10 2 YES 0 3",
                "note 12 text 2147483647 0 YES null 4",
                "qty -5 int8 19 0 YES 5 5");
            check(columns.equals(expected), "columns " + columns);

            List<String> keys = rows(m.getPrimaryKeys(null, "public", "jd_orders"), "COLUMN_NAME", "KEY_SEQ", "PK_NAME");
            check(keys.equals(List.of("region 1 jd_orders_pkey", "id 2 jd_orders_pkey")), "primary key " + keys);
            check(rows(m.getPrimaryKeys(null, "public", "jd_log"), "COLUMN_NAME").isEmpty(), "no key on jd_log");

            List<String> indexes = rows(m.getIndexInfo(null, "public", "jd_orders", false, false), "INDEX_NAME", "NON_UNIQUE", "COLUMN_NAME", "ORDINAL_POSITION");
            check(indexes.equals(List.of("jd_orders_pkey f region 1", "jd_orders_pkey f id 2")), "indexes " + indexes);
            check(rows(m.getImportedKeys(null, "public", "jd_orders"), "PKTABLE_NAME").isEmpty(), "imported keys");

            List<String> types = rows(m.getTypeInfo(), "TYPE_NAME");
            check(types.containsAll(List.of("int4", "int8", "varchar", "text", "numeric", "bool", "timestamptz")), "type info " + types.size());

            try (PreparedStatement p = c.prepareStatement("INSERT INTO jd_orders (region, id, total) VALUES (?, ?, ?)")) {
                p.setString(1, "eu");
                p.setInt(2, 1);
                p.setBigDecimal(3, new java.math.BigDecimal("9.50"));
                check(p.executeUpdate() == 1, "insert count");
            }
            try (PreparedStatement p = c.prepareStatement("SELECT total, qty FROM jd_orders WHERE region = ? AND id = ?")) {
                p.setString(1, "eu");
                p.setInt(2, 1);
                try (ResultSet rs = p.executeQuery()) {
                    check(rs.next(), "a row");
                    check(rs.getBigDecimal(1).compareTo(new java.math.BigDecimal("9.5")) == 0 && rs.getLong(2) == 5, "row values");
                    ResultSetMetaData rm = rs.getMetaData();
                    check(rm.getColumnType(1) == Types.NUMERIC && rm.getColumnType(2) == Types.BIGINT, "result column types");
                }
            }
        }
        System.out.println("jdbc ok");
    }
}
