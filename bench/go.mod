module github.com/rulelock/rulelock/bench

go 1.26

replace github.com/rulelock/rulelock => ../
