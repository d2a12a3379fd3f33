#!/usr/bin/env python3
"""tryton-seed.py CONF DBNAME — seed a fresh Tryton 6.0 database for plantsync's
interop tests (plugins/tryton, TestInteropTryton*).

Run by scripts/peers/tryton.sh after `trytond-admin --all` and module
activation. It creates what a fresh database lacks before purchases work
(PEERS.md): a currency, the company and its party, the admin user's
companies, a payable and an expense account, the default payable account, a
product category carrying the expense account, a supplier, and products
with that supplier. The warehouse WH comes with the stock module.

Codes the tests and docs rely on:
  purchasable products 200201 (kg) and 200202 (unit) from the supplier
  party "Acme Supplies", the producible product 100471 (unit), company 1,
  warehouse code WH, production location code PROD.
"""
import sys
from decimal import Decimal

conf, dbname = sys.argv[1], sys.argv[2]

from trytond.config import config  # noqa: E402

config.update_etc(conf)

from trytond.pool import Pool  # noqa: E402
from trytond.transaction import Transaction  # noqa: E402

Pool.start()
pool = Pool(dbname)
pool.init()

with Transaction().start(dbname, 0, context={'active_test': False}):
    Currency = pool.get('currency.currency')
    Party = pool.get('party.party')
    Company = pool.get('company.company')
    User = pool.get('res.user')
    eur, = Currency.create([{'name': 'Euro', 'code': 'EUR', 'symbol': 'EUR',
                             'rounding': Decimal('0.01'), 'digits': 2}])
    cparty, supplier = Party.create([{'name': 'Plantsync Demo GmbH'},
                                     {'name': 'Acme Supplies'}])
    company, = Company.create([{'party': cparty.id, 'currency': eur.id}])
    admin, = User.search([('login', '=', 'admin')])
    User.write([admin], {'companies': [('add', [company.id])], 'company': company.id})
    Transaction().commit()

with Transaction().start(dbname, 0, context={'company': company.id, 'active_test': False}):
    AccountType = pool.get('account.account.type')
    Account = pool.get('account.account')
    AccountConfig = pool.get('account.configuration')
    Category = pool.get('product.category')
    Uom = pool.get('product.uom')
    Template = pool.get('product.template')
    Location = pool.get('stock.location')

    payable_type, expense_type = AccountType.create([
        {'name': 'Payable', 'company': company.id, 'statement': 'balance', 'payable': True},
        {'name': 'Expense', 'company': company.id, 'statement': 'income', 'expense': True},
    ])
    payable, expense = Account.create([
        {'name': 'Payable', 'code': '4000', 'company': company.id, 'type': payable_type.id,
         'party_required': True, 'reconcile': True},
        {'name': 'Expense', 'code': '6000', 'company': company.id, 'type': expense_type.id},
    ])
    acfg = AccountConfig(1)
    acfg.default_account_payable = payable
    acfg.save()

    category, = Category.create([{'name': 'Purchased material', 'accounting': True,
                                  'account_expense': expense.id}])
    kg, = Uom.search([('symbol', '=', 'kg')])
    unit, = Uom.search([('symbol', '=', 'u')])
    for code, name, uom in (('200201', 'Steel sheet 2 mm', kg), ('200202', 'Bearing 6204', unit)):
        Template.create([{
            'name': name, 'type': 'goods', 'default_uom': uom.id, 'purchasable': True,
            'purchase_uom': uom.id, 'account_category': category.id,
            'list_price': Decimal('10'),
            'products': [('create', [{'suffix_code': code, 'cost_price': Decimal('8')}])],
            'product_suppliers': [('create', [{'party': supplier.id, 'company': company.id}])],
        }])
    # A finished good for production orders.
    Template.create([{
        'name': 'Gearbox G4', 'type': 'goods', 'default_uom': unit.id, 'producible': True,
        'list_price': Decimal('100'),
        'products': [('create', [{'suffix_code': '100471', 'cost_price': Decimal('60')}])],
    }])
    warehouse, = Location.search([('type', '=', 'warehouse'), ('code', '=', 'WH')])
    Transaction().commit()

print('seeded %s: company %d, warehouse %d, supplier %d' % (dbname, company.id, warehouse.id, supplier.id))
